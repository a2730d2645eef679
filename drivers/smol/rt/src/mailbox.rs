//! A single-task queue: what the engine hands one call or tunnel task. A
//! plain queue and one waker, allocated only while messages wait; a channel
//! would allocate a block of slots and its listeners for every call.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::{Poll, Waker};

/// The most messages an empty queue makes room for at once.
const MAX_ROOM: usize = 64;

pub struct Mailbox<T> {
    queue: RefCell<VecDeque<T>>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
    /// Keep the queue's memory between messages (a call's stream), rather
    /// than free it whenever the queue empties (an idle tunnel).
    keep: bool,
    /// How many messages the last [`Self::take_all`] took: room an empty
    /// queue makes at its first message.
    room: Cell<usize>,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Mailbox<T> {
    pub fn new() -> Self {
        Mailbox {
            queue: RefCell::new(VecDeque::new()),
            waker: RefCell::new(None),
            closed: Cell::new(false),
            keep: false,
            room: Cell::new(0),
        }
    }

    /// A mailbox that keeps its queue's memory until dropped: for a task that
    /// lives only as long as a busy call, where a token stream would
    /// otherwise allocate and free the queue for every chunk.
    pub fn keeping() -> Self {
        Mailbox {
            keep: true,
            ..Self::new()
        }
    }

    /// Queues `m` for the task; false once the task has stopped listening.
    pub fn push(&self, m: T) -> bool {
        if self.closed.get() {
            return false;
        }
        let mut q = self.queue.borrow_mut();
        if q.capacity() == 0 {
            // A busy tunnel's writer takes its whole queue each time: room
            // for a batch like the last at once, not grown 4, 8, 16 every
            // time; an idle tunnel's few frames take no more than before.
            q.reserve(self.room.get().max(1));
        }
        q.push_back(m);
        drop(q);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
        true
    }

    /// The task stops listening: later pushes fail, queued messages are
    /// dropped (a keeping mailbox keeps the queue's memory for [`Self::reopen`]).
    pub fn close(&self) {
        self.closed.set(true);
        // Dropped outside the borrow: a message's drop may touch the mailbox.
        let mut queued = std::mem::take(&mut *self.queue.borrow_mut());
        if self.keep {
            queued.clear();
            *self.queue.borrow_mut() = queued;
        } else {
            drop(queued);
        }
        self.waker.borrow_mut().take();
    }

    /// Listening again after [`Self::close`]: a connection's next call
    /// reuses its last call's mailbox.
    pub fn reopen(&self) {
        self.closed.set(false);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    pub fn try_recv(&self) -> Option<T> {
        let mut q = self.queue.borrow_mut();
        let m = q.pop_front();
        if !self.keep && q.is_empty() && q.capacity() > 0 {
            // An idle task holds no queue memory.
            *q = VecDeque::new();
        }
        m
    }

    /// Waits for the next message.
    pub fn recv(&self) -> impl std::future::Future<Output = T> + '_ {
        std::future::poll_fn(|cx| match self.try_recv() {
            Some(m) => Poll::Ready(m),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Waits for messages, then takes every one queued.
    pub fn take_all(&self) -> impl std::future::Future<Output = VecDeque<T>> + '_ {
        std::future::poll_fn(|cx| {
            let mut q = self.queue.borrow_mut();
            if q.is_empty() {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                self.room.set(q.len().min(MAX_ROOM));
                Poll::Ready(std::mem::take(&mut *q))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Mailbox;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A batch takes its queue's memory with it; the next first message
    /// makes room for a batch like the last, and a small batch for little.
    #[test]
    fn an_empty_queue_makes_room_for_a_batch_like_the_last() {
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let mb = Mailbox::new();
        let mut take = |mb: &Mailbox<u32>| match std::pin::pin!(mb.take_all()).poll(&mut cx) {
            Poll::Ready(q) => q.len(),
            Poll::Pending => 0,
        };
        (0..10).for_each(|i| assert!(mb.push(i)));
        assert_eq!(take(&mb), 10);
        assert_eq!(mb.queue.borrow().capacity(), 0, "taken: no memory held");
        mb.push(1);
        assert!(mb.queue.borrow().capacity() >= 10);
        assert_eq!(take(&mb), 1);
        mb.push(2);
        assert!(mb.queue.borrow().capacity() < 10, "after a batch of one");
    }

    #[test]
    fn wakes_the_waiting_task_and_keeps_order() {
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mb = Mailbox::new();
        {
            let mut f = std::pin::pin!(mb.recv());
            assert!(f.as_mut().poll(&mut cx).is_pending());
            assert!(mb.push(1));
            assert_eq!(woken.0.load(Ordering::SeqCst), 1);
            assert!(mb.push(2));
            assert_eq!(f.as_mut().poll(&mut cx), Poll::Ready(1));
        }
        assert_eq!(mb.try_recv(), Some(2));
        assert_eq!(mb.queue.borrow().capacity(), 0, "drained: no memory held");
        mb.push(3);
        mb.push(4);
        let mut all = std::pin::pin!(mb.take_all());
        match all.as_mut().poll(&mut cx) {
            Poll::Ready(q) => assert_eq!(Vec::from(q), vec![3, 4]),
            Poll::Pending => panic!("messages were queued"),
        }
        mb.close();
        assert!(!mb.push(5), "closed: pushes fail");
        assert!(mb.is_empty());
        let kept = Mailbox::keeping();
        kept.push(1);
        assert_eq!(kept.try_recv(), Some(1));
        assert!(
            kept.queue.borrow().capacity() > 0,
            "kept for the next message"
        );
        kept.push(2);
        kept.close();
        assert!(!kept.push(3) && kept.is_empty(), "closed: dropped, refused");
        assert!(kept.queue.borrow().capacity() > 0, "and its memory kept");
        kept.reopen();
        assert!(kept.push(4));
        assert_eq!(kept.try_recv(), Some(4));
    }
}
