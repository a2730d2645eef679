//! One box for a loop's futures of one type: each takes the last one's place.

use std::future::Future;
use std::pin::Pin;

/// `fut` in `slot`'s box (the last future's place, dropped first), or in a
/// new box if the slot is empty: a loop that awaits one such future per
/// turn allocates once, not once a turn.
pub fn place<F: Future>(slot: &mut Option<Pin<Box<F>>>, fut: F) -> Pin<&mut F> {
    match slot {
        Some(b) => b.set(fut),
        None => *slot = Some(Box::pin(fut)),
    }
    slot.as_mut().expect("just placed").as_mut()
}

#[cfg(test)]
mod tests {
    use super::place;
    use std::cell::Cell;

    #[test]
    fn a_future_takes_the_last_ones_box_and_the_last_one_is_dropped_first() {
        let dropped = Cell::new(0);
        struct Noted<'a>(&'a Cell<u32>);
        impl Drop for Noted<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let make = |n: u32| {
            let noted = Noted(&dropped);
            async move {
                let _held = &noted;
                n * 2
            }
        };
        let mut slot = None;
        let first: *const _ = &*place(&mut slot, make(1));
        assert_eq!(dropped.get(), 0, "never polled, still held");
        let second = place(&mut slot, make(2));
        assert_eq!(std::ptr::from_ref(&*second), first, "the same box");
        assert_eq!(dropped.get(), 1, "the first went when the second came");
        assert_eq!(smol::block_on(second), 4);
        let third: *const _ = &*place(&mut slot, make(3));
        assert_eq!(third, first);
        drop(slot);
        assert_eq!(dropped.get(), 3);
    }
}
