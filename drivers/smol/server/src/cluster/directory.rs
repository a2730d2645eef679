//! The shared ownership directory in Redis. Keys are those of the reference
//! relay: `agent:<lowercase address>` → owning instance id, for `CLAIM_TTL`.

use osaurus_relay_engine::{ClaimOutcome, ClusterConfig, Located};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Script};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tracing::{info, warn};

const SECRET_KEY: &str = "relay:hop-secret";

/// Renew if ours, re-claim if gone (Redis restarted, or a claim made while it
/// was down), else report the owner.
const REFRESH: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end
return v";

/// Compare-and-delete: only our own claim is removed. With a TTL in ARGV[2],
/// the agent is marked as moving (its tunnel closed) for that long.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] ~= '0' then redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2]) end
  return 1
end
return 0";

/// Where each instance announces the agents it claims: calls held
/// elsewhere follow them (one subscriber per instance, no polling).
pub const CLAIMS_CHANNEL: &str = "relay:claims";

pub fn agent_key(agent: &str) -> String {
    format!("agent:{agent}")
}

fn moving_key(agent: &str) -> String {
    format!("relay:moving:{agent}")
}

fn instance_key(id: &str) -> String {
    format!("relay:instance:{id}")
}

pub(crate) struct Directory {
    client: redis::Client,
    config: AsyncConnectionConfig,
    pub id: String,
    /// This instance's internal URL (forwarding mode).
    pub url: Option<String>,
    conn: RefCell<Option<MultiplexedConnection>>,
    connecting: Cell<bool>,
    retry_at: Cell<Option<Instant>>,
    /// `None` until the first operation ends.
    up: Cell<Option<bool>>,
    /// Health changes not yet passed to the engine.
    health_news: Cell<Option<bool>>,
    /// Shared by all instances; proves a forwarded call came from one.
    secret: RefCell<Option<String>>,
    urls: RefCell<HashMap<String, (String, Instant)>>,
    refresh: Script,
    release: Script,
    /// Operations started and not finished (awaited at shutdown).
    pub inflight: Cell<usize>,
    /// Lifetime of an ownership key (`CLAIM_TTL`; 120 s by default, as the reference); renewed on every pong.
    claim_ttl: u64,
    /// After a failed connection attempt, operations fail fast this long.
    retry_after: Duration,
    /// How long another instance's address is reused.
    url_cache: Duration,
    /// Lifetime of this instance's address key, in seconds.
    instance_ttl: u64,
    /// Lifetime of a moving mark (`RECONNECT_GRACE`, in seconds; 0: none).
    pub moving_ttl: Cell<u64>,
}

impl Directory {
    /// The directory at `url` for this instance (`own_url`: where the
    /// others forward calls to it), with the timings of `c`.
    pub fn new(url: &str, own_url: Option<String>, c: &ClusterConfig) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("REDIS_URL: {e}"))?;
        let timeout = c.directory_timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let (id, claim_ttl) = (c.instance_id.clone(), c.claim_ttl.as_secs().max(1));
        Ok(Directory {
            client,
            config,
            id,
            url: own_url,
            conn: RefCell::new(None),
            connecting: Cell::new(false),
            retry_at: Cell::new(None),
            up: Cell::new(None),
            health_news: Cell::new(None),
            secret: RefCell::new(None),
            urls: RefCell::new(HashMap::new()),
            refresh: Script::new(REFRESH),
            release: Script::new(RELEASE),
            inflight: Cell::new(0),
            claim_ttl,
            retry_after: c.directory_retry_after,
            url_cache: c.peer_url_cache,
            instance_ttl: c.instance_ttl.as_secs().max(1),
            moving_ttl: Cell::new(0),
        })
    }

    /// A health change the engine has not heard of yet.
    pub fn take_health_news(&self) -> Option<bool> {
        self.health_news.take()
    }

    fn set_up(&self, up: bool) {
        if self.up.replace(Some(up)) != Some(up) {
            self.health_news.set(Some(up));
            if up {
                info!(instance = %self.id, "redis reachable");
            } else {
                warn!(instance = %self.id, "redis unreachable: serving local tunnels only");
            }
        }
    }

    /// The shared connection, connecting if needed; `None` fails fast while
    /// Redis is down so no call ever queues behind it.
    async fn conn(&self) -> Option<MultiplexedConnection> {
        if let Some(c) = self.conn.borrow().as_ref() {
            return Some(c.clone());
        }
        if self.connecting.get() && self.up.get().is_none() {
            // The very first connection is on its way (a relay just started
            // behind a load balancer): wait for it, within its timeout.
            while self.connecting.get() {
                async_io::Timer::after(Duration::from_millis(2)).await;
            }
            return self.conn.borrow().clone();
        }
        if self.connecting.get() || self.retry_at.get().is_some_and(|t| Instant::now() < t) {
            return None;
        }
        self.connecting.set(true);
        let r = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await;
        self.connecting.set(false);
        match r {
            Ok(c) => {
                *self.conn.borrow_mut() = Some(c.clone());
                Some(c)
            }
            Err(e) => {
                self.retry_at.set(Some(Instant::now() + self.retry_after));
                if self.up.get() != Some(false) {
                    warn!(error = %e, "redis connect failed");
                }
                self.set_up(false);
                None
            }
        }
    }

    /// Runs one operation; any error drops the connection (a new one is made
    /// on the next use) and marks Redis down.
    async fn run<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let conn = self.conn().await?;
        match op(conn).await {
            Ok(v) => {
                self.set_up(true);
                Some(v)
            }
            Err(e) => {
                warn!(error = %e, "redis operation failed");
                self.conn.borrow_mut().take();
                self.retry_at.set(Some(Instant::now() + self.retry_after));
                self.set_up(false);
                None
            }
        }
    }

    /// `SET agent:<a> id EX <CLAIM_TTL> NX GET` (without `NX` to take over).
    pub async fn claim(&self, agent: &str, takeover: bool) -> ClaimOutcome {
        let key = agent_key(agent);
        let (id, ttl) = (self.id.clone(), self.claim_ttl);
        let prev: Option<Option<String>> = self
            .run(|mut c| async move {
                let mut cmd = redis::cmd("SET");
                cmd.arg(&key).arg(&id).arg("EX").arg(ttl);
                if !takeover {
                    cmd.arg("NX");
                }
                let prev: Option<String> = cmd.arg("GET").query_async(&mut c).await?;
                if prev.as_deref() == Some(id.as_str()) && !takeover {
                    // NX kept our own older claim: renew it.
                    let _: () = redis::cmd("EXPIRE")
                        .arg(&key)
                        .arg(ttl)
                        .query_async(&mut c)
                        .await?;
                }
                if takeover || prev.is_none() || prev.as_deref() == Some(id.as_str()) {
                    let news = format!("{} {id}", &key["agent:".len()..]);
                    let _: i64 = redis::cmd("PUBLISH")
                        .arg(CLAIMS_CHANNEL)
                        .arg(news)
                        .query_async(&mut c)
                        .await?;
                }
                Ok(prev)
            })
            .await;
        match prev {
            None => ClaimOutcome::Unavailable,
            Some(Some(other)) if other != self.id => {
                if takeover {
                    info!(agent, from = %other, "agent taken over from another instance");
                    ClaimOutcome::Ours
                } else {
                    ClaimOutcome::HeldBy(other)
                }
            }
            Some(_) => ClaimOutcome::Ours,
        }
    }

    /// Renews the claims; returns the agents another instance now owns.
    pub async fn refresh(&self, agents: &[String]) -> Vec<String> {
        let (id, ttl) = (self.id.clone(), self.claim_ttl);
        let script = &self.refresh;
        let owners = self
            .run(|mut c| async move {
                let mut owners = Vec::with_capacity(agents.len());
                for a in agents {
                    let v: redis::Value = script
                        .key(agent_key(a))
                        .arg(&id)
                        .arg(ttl)
                        .invoke_async(&mut c)
                        .await?;
                    owners.push(matches!(v, redis::Value::BulkString(_)));
                }
                Ok(owners)
            })
            .await
            .unwrap_or_default();
        agents
            .iter()
            .zip(owners)
            .filter(|(_, lost)| *lost)
            .map(|(a, _)| a.clone())
            .collect()
    }

    pub async fn release(&self, agent: &str, moving: bool) {
        let (key, id, script) = (agent_key(agent), self.id.clone(), &self.release);
        let ttl = if moving { self.moving_ttl.get() } else { 0 };
        let mark = moving_key(agent);
        let news = agent.to_string();
        let _: Option<i64> = self
            .run(|mut c| async move {
                let mut s = script.key(key);
                s.key(mark).arg(id).arg(ttl);
                let released: i64 = s.invoke_async(&mut c).await?;
                if released == 1 && ttl > 0 {
                    // The agent alone: it is moving (other instances drop their cache).
                    let _: i64 = redis::cmd("PUBLISH")
                        .arg(CLAIMS_CHANNEL)
                        .arg(news)
                        .query_async(&mut c)
                        .await?;
                }
                Ok(released)
            })
            .await;
    }

    /// The owner, or whether the agent is moving, in one `MGET`.
    pub async fn lookup(&self, agent: &str) -> Located {
        let keys = [agent_key(agent), moving_key(agent)];
        let v: Option<(Option<String>, Option<String>)> = self
            .run(|mut c| async move { redis::cmd("MGET").arg(&keys).query_async(&mut c).await })
            .await;
        match v {
            None => Located::Unavailable,
            Some((Some(owner), _)) => Located::Owner(owner),
            Some((None, Some(_))) => Located::Moving,
            Some((None, None)) => Located::Nobody,
        }
    }

    /// Feeds every claim any instance announces to `on_claim` (agent,
    /// instance), reconnecting after a loss; runs for good.
    pub async fn watch_claims(&self, on_claim: impl Fn(&str, &str)) {
        use smol::stream::StreamExt;
        loop {
            if let Ok(mut ps) = self.client.get_async_pubsub().await {
                if ps.subscribe(CLAIMS_CHANNEL).await.is_ok() {
                    let mut news = ps.on_message();
                    while let Some(m) = news.next().await {
                        let text: String = m.get_payload().unwrap_or_default();
                        // "<agent> <instance>": claimed; "<agent>": moving.
                        match text.split_once(' ') {
                            Some((agent, instance)) => on_claim(agent, instance),
                            None => on_claim(&text, ""),
                        }
                    }
                }
            }
            // Claims announced meanwhile are missed: their held calls time out.
            async_io::Timer::after(self.retry_after).await;
        }
    }

    /// Whether each agent has a claim, by one `MGET`; all `false` when Redis
    /// does not answer.
    pub async fn claimed(&self, agents: &[String]) -> Vec<bool> {
        let keys: Vec<String> = agents.iter().map(|a| agent_key(a)).collect();
        let v: Option<Vec<Option<String>>> = self
            .run(|mut c| async move { redis::cmd("MGET").arg(keys).query_async(&mut c).await })
            .await;
        match v {
            Some(v) if v.len() == agents.len() => v.iter().map(Option::is_some).collect(),
            _ => vec![false; agents.len()],
        }
    }

    /// The internal URL another instance published, cached briefly.
    pub async fn instance_url(&self, id: &str) -> Option<String> {
        if let Some((u, at)) = self.urls.borrow().get(id) {
            if at.elapsed() < self.url_cache {
                return Some(u.clone());
            }
        }
        let key = instance_key(id);
        let url: Option<String> = self
            .run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
            .flatten();
        if let Some(u) = &url {
            let mut urls = self.urls.borrow_mut();
            urls.retain(|_, (_, at)| at.elapsed() < self.url_cache);
            urls.insert(id.to_string(), (u.clone(), Instant::now()));
        }
        url
    }

    pub fn secret(&self) -> Option<String> {
        self.secret.borrow().clone()
    }

    /// The hop secret, read now if the first heartbeat has not brought it.
    pub async fn secret_now(&self) -> Option<String> {
        if let Some(s) = self.secret() {
            return Some(s);
        }
        let s: Option<String> = self
            .run(|mut c| async move { redis::cmd("GET").arg(SECRET_KEY).query_async(&mut c).await })
            .await
            .flatten();
        if let Some(s) = &s {
            *self.secret.borrow_mut() = Some(s.clone());
        }
        s
    }

    /// Checks the connection, learns the shared hop secret (creating it the
    /// first time) and publishes this instance's URL.
    pub async fn heartbeat(&self, fresh_secret: String) {
        let url = self.url.clone();
        let id = self.id.clone();
        let secret: Option<String> = self
            .run(|mut c| async move {
                let _: Option<String> = redis::cmd("SET")
                    .arg(SECRET_KEY)
                    .arg(&fresh_secret)
                    .arg("NX")
                    .query_async(&mut c)
                    .await?;
                if let Some(u) = url {
                    let _: () = redis::cmd("SET")
                        .arg(instance_key(&id))
                        .arg(u)
                        .arg("EX")
                        .arg(self.instance_ttl)
                        .query_async(&mut c)
                        .await?;
                }
                redis::cmd("GET").arg(SECRET_KEY).query_async(&mut c).await
            })
            .await
            .flatten();
        if let Some(s) = secret {
            *self.secret.borrow_mut() = Some(s);
        }
    }
}
