//! The pure, deterministic model behind both layers: tenants (agents, queues,
//! IVRs, profiles), call journeys and agent presence.
//!
//! Memory design: nothing here is stored per event. A journey is a pure
//! function of `(seed, tenant, journey index k)` and its start time is a pure,
//! non-decreasing function of `k` (`start(k) = epoch + floor((k + u_k) *
//! interval)` with `u_k` in `[0, 1)`), so the historic layer regenerates any
//! window's records on demand and the live layer only keeps a small heap of
//! pending `(time, k, event)` references for journeys in flight. Presence is a
//! pure function of `(seed, tenant, agent, UTC hour)`. Memory is therefore
//! bounded by the number of journeys in flight (`rate / speed x journey
//! length`), never by run length.

use std::collections::HashMap;
use std::ops::RangeInclusive;

/// Milliseconds in one hour (profile_history aggregates per UTC hour).
pub const HOUR_MS: i64 = 3_600_000;
/// Upper bound of the time between a journey's start and the start of any of
/// its queue or agent records; lets a window query find every record whose
/// `time.start` falls inside it by enumerating journeys from `start - this`.
pub const MAX_RECORD_OFFSET_MS: i64 = 5 * 60_000;
/// Upper bound of a journey's total length (start to end).
pub const MAX_JOURNEY_MS: i64 = 20 * 60_000;

/// SplitMix64: tiny, fast and good enough for a simulator; every draw is a
/// pure function of the seed it was built from.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(parts: &[u64]) -> Self {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for p in parts {
            state = mix(state ^ p.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        }
        Rng(state)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u64() % ((hi - lo + 1) as u64)) as i64
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// Domain tags so different draws from the same numbers never correlate.
const TAG_TENANT: u64 = 1;
const TAG_JOURNEY: u64 = 2;
const TAG_START: u64 = 3;
const TAG_PRESENCE_ENTRY: u64 = 4;
const TAG_PRESENCE_HOUR: u64 = 5;
const TAG_ID: u64 = 6;
const TAG_QUEUE_BREAK: u64 = 7;

#[derive(Clone, Debug)]
pub struct AgentInfo {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    pub phone: String,
    pub username: String,
    pub email: String,
    pub avatar: String,
    pub is_admin: i64,
    pub licence_type: String,
    pub ccpro: i64,
    pub account_type_id: i64,
    /// Indexes into the tenant's queues this agent is logged in to (static).
    pub queues: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct QueueInfo {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    pub phone: String,
    pub strategy: String,
}

#[derive(Clone, Debug)]
pub struct IvrInfo {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    pub phone: String,
}

/// One presence profile; every agent has all of them, with ids
/// `agent.id * 10 + index`.
#[derive(Clone, Debug)]
pub struct ProfileDef {
    pub name: &'static str,
    pub available: bool,
    pub is_wrapup: bool,
}

pub const PROFILES: [ProfileDef; 5] = [
    ProfileDef {
        name: "Tillgänglig",
        available: true,
        is_wrapup: false,
    },
    ProfileDef {
        name: "Lunch",
        available: false,
        is_wrapup: false,
    },
    ProfileDef {
        name: "Möte",
        available: true,
        is_wrapup: false,
    },
    ProfileDef {
        name: "Efterarbete",
        available: true,
        is_wrapup: true,
    },
    ProfileDef {
        name: "Slutat för dagen",
        available: false,
        is_wrapup: false,
    },
];

pub fn profile_id(agent: &AgentInfo, profile: usize) -> i64 {
    agent.id * 10 + profile as i64
}

/// One customer (one token): its own agents, queues and IVRs.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub index: usize,
    pub customer_id: i64,
    pub customer_name: String,
    pub agents: Vec<AgentInfo>,
    pub queues: Vec<QueueInfo>,
    pub ivrs: Vec<IvrInfo>,
}

const FIRST_NAMES: [&str; 16] = [
    "Jennifer", "Patrik", "Anna", "Erik", "Maria", "Johan", "Sofia", "Lars", "Emma", "Karl",
    "Elin", "Nils", "Sara", "Oskar", "Ida", "Hugo",
];
const LAST_NAMES: [&str; 12] = [
    "Symoens",
    "Hilvéus",
    "Lindqvist",
    "Berg",
    "Nyström",
    "Holm",
    "Ek",
    "Sandberg",
    "Lund",
    "Dahl",
    "Wik",
    "Strand",
];
const QUEUE_NAMES: [&str; 8] = [
    "Telavox Support",
    "Jour-Customer Support",
    "SOHO",
    "Sales",
    "Billing",
    "Onboarding",
    "Enterprise",
    "Partners",
];
const STRATEGIES: [&str; 3] = ["ringall", "leastrecent", "random"];
const LICENCES: [&str; 3] = ["Flow Mobile Custom 10", "Flow Mobile Arms", "Flow Office"];

impl Tenant {
    pub fn generate(seed: u64, index: usize, agents: usize, queues: usize) -> Tenant {
        let mut rng = Rng::new(&[seed, TAG_TENANT, index as u64]);
        let customer_id = 43 + index as i64 * 1000 + rng.range(0, 99);
        let customer_name = if index == 0 {
            "Telavox AB".to_string()
        } else {
            format!("Simulated Customer {} AB", index + 1)
        };
        let base = 800_000 + index as i64 * 10_000;
        let queue_list: Vec<QueueInfo> = (0..queues.max(1))
            .map(|q| QueueInfo {
                id: 19_000 + index as i64 * 1000 + q as i64,
                account_id: 3_000_000 + index as i64 * 10_000 + 500 + q as i64,
                name: if q < QUEUE_NAMES.len() {
                    QUEUE_NAMES[q].to_string()
                } else {
                    format!("Queue {}", q + 1)
                },
                phone: format!("0406200{:03}", 100 + q),
                strategy: STRATEGIES[rng.below(STRATEGIES.len())].to_string(),
            })
            .collect();
        let agent_list = (0..agents.max(1))
            .map(|a| {
                let first = FIRST_NAMES[(a + index) % FIRST_NAMES.len()];
                let last = LAST_NAMES[(a / FIRST_NAMES.len() + a * 7 + index) % LAST_NAMES.len()];
                let name = if a < FIRST_NAMES.len() {
                    format!("{first} {last}")
                } else {
                    format!("{first} {last} {}", a / FIRST_NAMES.len() + 1)
                };
                let phone = format!("00322897{:04}", 1000 + a + index * 100);
                let id = base + a as i64;
                let mut logged: Vec<usize> =
                    (0..queue_list.len()).filter(|_| rng.chance(0.6)).collect();
                if logged.is_empty() {
                    logged.push(a % queue_list.len());
                }
                AgentInfo {
                    id,
                    account_id: 3_400_000 + index as i64 * 10_000 + a as i64,
                    email: format!(
                        "{}.{}@customer{}.example",
                        first.to_lowercase(),
                        last.to_lowercase().replace('é', "e"),
                        index + 1
                    ),
                    avatar: format!(
                        "https://flow.telavox.com/api/internal/contacts/contact-{}/avatar",
                        id + 3_000_000
                    ),
                    username: phone.clone(),
                    phone,
                    name,
                    is_admin: i64::from(a == 0),
                    licence_type: LICENCES[rng.below(LICENCES.len())].to_string(),
                    ccpro: 1,
                    account_type_id: 1,
                    queues: logged,
                }
            })
            .collect();
        let ivrs = (0..2)
            .map(|i| IvrInfo {
                id: 7000 + index as i64 * 100 + i,
                account_id: 3_000_000 + index as i64 * 10_000 + 900 + i,
                name: if i == 0 {
                    "Main menu".to_string()
                } else {
                    "After hours".to_string()
                },
                phone: format!("0406200{:03}", 900 + i),
            })
            .collect();
        Tenant {
            index,
            customer_id,
            customer_name,
            agents: agent_list,
            queues: queue_list,
            ivrs,
        }
    }
}

/// Everything the model needs: the seed, the clock origin and the tenants.
#[derive(Debug)]
pub struct World {
    pub seed: u64,
    /// Simulated epoch milliseconds when the simulator started (journey 0).
    pub epoch_ms: i64,
    /// Simulated milliseconds between two journey starts of one tenant.
    pub interval_ms: f64,
    /// First journey index that exists (negative with `--history-days`).
    pub k_min: i64,
    /// Start of the simulated history: no record starts before it.
    pub history_start_ms: i64,
    pub tenants: Vec<Tenant>,
}

impl World {
    #[allow(clippy::too_many_arguments)] // one per simulator flag
    pub fn new(
        seed: u64,
        epoch_ms: i64,
        tenants: usize,
        agents: usize,
        queues: usize,
        rate_per_real_second: f64,
        speed: f64,
        history_days: u32,
    ) -> World {
        let tenants_n = tenants.max(1);
        // rate is real-time and total across tenants; per tenant and per
        // simulated second that is rate / (tenants * speed).
        let interval_ms = (1000.0 * speed * tenants_n as f64 / rate_per_real_second).max(1e-3);
        let history_ms = history_days as i64 * 24 * HOUR_MS;
        let k_min = -((history_ms as f64 / interval_ms).ceil() as i64);
        World {
            seed,
            epoch_ms,
            interval_ms,
            k_min,
            history_start_ms: epoch_ms - history_ms,
            tenants: (0..tenants_n)
                .map(|i| Tenant::generate(seed, i, agents, queues))
                .collect(),
        }
    }

    pub fn journey_start(&self, tenant: usize, k: i64) -> i64 {
        let mut rng = Rng::new(&[self.seed, TAG_START, tenant as u64, k as u64]);
        let u = rng.unit() * 0.999;
        self.epoch_ms + ((k as f64 + u) * self.interval_ms).floor() as i64
    }

    /// Journey indexes whose start lies in `[from, to)` (and that exist).
    pub fn journeys_starting_in(&self, tenant: usize, from: i64, to: i64) -> RangeInclusive<i64> {
        if to <= from {
            #[allow(clippy::reversed_empty_ranges)] // an empty inclusive range
            return 1..=0;
        }
        let lo =
            (((from - self.epoch_ms) as f64 / self.interval_ms).floor() as i64 - 1).max(self.k_min);
        let hi = ((to - self.epoch_ms) as f64 / self.interval_ms).ceil() as i64 + 1;
        let mut first = lo;
        while first <= hi && self.journey_start(tenant, first) < from {
            first += 1;
        }
        let mut last = hi;
        while last >= first && self.journey_start(tenant, last) >= to {
            last -= 1;
        }
        first..=last
    }

    /// The journey with index `k` of `tenant` (pure).
    pub fn journey(&self, tenant: usize, k: i64) -> Journey {
        Journey::generate(self, tenant, k)
    }

    /// RFC 4122-shaped id for a journey, deterministic.
    pub fn call_id(&self, tenant: usize, k: i64) -> String {
        let mut rng = Rng::new(&[self.seed, TAG_ID, tenant as u64, k as u64]);
        let a = rng.next_u64();
        let b = rng.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    pub fn customer_number(&self, tenant: usize, k: i64) -> String {
        let mut rng = Rng::new(&[self.seed, TAG_ID, tenant as u64, k as u64, 7]);
        format!("00324706{:05}", rng.range(0, 99_999))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
        }
    }
}

#[derive(Clone, Debug)]
pub struct IvrVisit {
    pub ivr: usize,
    pub at: i64,
    pub digit: u8,
}

#[derive(Clone, Debug)]
pub struct QueueVisit {
    pub queue: usize,
    pub enter: i64,
    /// When the call left the queue: answered, transferred on, or given up.
    pub exit: i64,
    /// End of the queue record: the call end if answered from here, else `exit`.
    pub end: i64,
    pub answered_at: Option<i64>,
    pub fail_reason: Option<&'static str>,
    /// 1 when the call reached this queue by a transfer from a previous queue.
    pub from_transfer: bool,
    pub offers: std::ops::Range<usize>,
    /// Snapshot of the queue when the call entered (deterministic).
    pub free_agents: i64,
    pub talking_agents: i64,
}

#[derive(Clone, Debug)]
pub struct Offer {
    pub agent: usize,
    pub visit: Option<usize>,
    pub start: i64,
    /// When ringing stopped (answer or give up).
    pub ring_end: i64,
    pub answered: bool,
    /// End of the agent record: call end if answered, else `ring_end`.
    pub end: i64,
    pub hold_ms: i64,
    pub end_reason: &'static str,
}

impl Offer {
    pub fn answered_at(&self) -> Option<i64> {
        self.answered.then_some(self.ring_end)
    }
    pub fn talk_ms(&self) -> i64 {
        if self.answered {
            self.end - self.ring_end - self.hold_ms
        } else {
            0
        }
    }
}

/// Which of the five data sources a record or event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Calls,
    Queues,
    Agents,
    ProfileLive,
    ProfileHistory,
}

impl Source {
    pub const ALL: [Source; 5] = [
        Source::Calls,
        Source::Queues,
        Source::Agents,
        Source::ProfileLive,
        Source::ProfileHistory,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Calls => "calls",
            Source::Queues => "queues",
            Source::Agents => "agents",
            Source::ProfileLive => "profile_live",
            Source::ProfileHistory => "profile_history",
        }
    }
    pub fn from_path(path: &str) -> Option<Source> {
        Source::ALL
            .into_iter()
            .find(|s| path.trim_end_matches('/') == format!("/{}", s.as_str()))
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A record inside a journey.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordRef {
    Call,
    Queue(usize),
    Agent(usize),
}

/// What happens at one moment of a journey, i.e. one pushed live frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JourneyEvent {
    /// Push of a record's state (calls, queues or agents socket).
    Record(RecordRef),
    /// Agent of offer `n` changed active-call state (profile_live socket).
    AgentCallState(usize),
}

#[derive(Clone, Debug)]
pub struct Journey {
    pub tenant: usize,
    pub k: i64,
    pub start: i64,
    pub end: i64,
    pub direction: Direction,
    pub internal: bool,
    pub ivr: Option<IvrVisit>,
    pub visits: Vec<QueueVisit>,
    pub offers: Vec<Offer>,
    pub voicemail: bool,
    pub recorded: bool,
    /// The caller hung up without being answered.
    pub customer_no_answer: bool,
    pub terminated_reason: &'static str,
}

/// The shape of a journey, chosen at random by the generator or given by a
/// test (`Journey::with_plan`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JourneyPlan {
    pub direction: Direction,
    pub ivr: bool,
    /// Per queue visit, the answers of the successive offers (true = answered;
    /// only the last offer of a visit may answer).
    pub visits: Vec<Vec<bool>>,
    pub caller_hangs_up_in_ivr: bool,
    pub voicemail: bool,
}

impl JourneyPlan {
    /// The § 1.2 example: IVR, queue 1 offered to two agents who do not
    /// answer, queue 2 offered to a third agent who answers.
    pub fn worked_example() -> JourneyPlan {
        JourneyPlan {
            direction: Direction::Incoming,
            ivr: true,
            visits: vec![vec![false, false], vec![true]],
            caller_hangs_up_in_ivr: false,
            voicemail: false,
        }
    }

    fn random(rng: &mut Rng) -> JourneyPlan {
        if rng.chance(0.15) {
            return JourneyPlan {
                direction: Direction::Outgoing,
                ivr: false,
                visits: vec![vec![rng.chance(0.75)]],
                caller_hangs_up_in_ivr: false,
                voicemail: false,
            };
        }
        let ivr = rng.chance(0.7);
        if ivr && rng.chance(0.05) {
            return JourneyPlan {
                direction: Direction::Incoming,
                ivr,
                visits: vec![],
                caller_hangs_up_in_ivr: true,
                voicemail: false,
            };
        }
        let n_visits = if rng.chance(0.3) { 2 } else { 1 };
        let mut visits = Vec::new();
        for v in 0..n_visits {
            let last_visit = v + 1 == n_visits;
            let offers = rng.range(1, 3) as usize;
            let answered = if last_visit { rng.chance(0.8) } else { false };
            let mut o = vec![false; offers];
            if answered {
                o[offers - 1] = true;
            }
            visits.push(o);
        }
        let unanswered = visits.last().is_some_and(|v| !v.iter().any(|a| *a));
        JourneyPlan {
            direction: Direction::Incoming,
            ivr,
            visits,
            caller_hangs_up_in_ivr: false,
            voicemail: unanswered && rng.chance(0.4),
        }
    }
}

impl Journey {
    pub fn generate(world: &World, tenant: usize, k: i64) -> Journey {
        let mut rng = Rng::new(&[world.seed, TAG_JOURNEY, tenant as u64, k as u64]);
        let plan = JourneyPlan::random(&mut rng);
        Journey::with_plan(world, tenant, k, &plan, &mut rng)
    }

    /// Lays out a journey of the given shape in time (durations from `rng`).
    pub fn with_plan(
        world: &World,
        tenant: usize,
        k: i64,
        plan: &JourneyPlan,
        rng: &mut Rng,
    ) -> Journey {
        let t = &world.tenants[tenant.min(world.tenants.len() - 1)];
        let start = world.journey_start(tenant, k);
        let mut now = start;
        let ivr = plan.ivr.then(|| {
            let v = IvrVisit {
                ivr: rng.below(t.ivrs.len()),
                at: now,
                digit: rng.range(1, 3) as u8,
            };
            now += rng.range(3_000, 20_000);
            v
        });
        let mut visits = Vec::new();
        let mut offers = Vec::new();
        let mut end;
        let mut voicemail = false;
        let mut customer_no_answer = false;
        let mut terminated = "CALLER_HANGUP";
        if plan.direction == Direction::Outgoing {
            let answered = plan
                .visits
                .first()
                .and_then(|v| v.first())
                .copied()
                .unwrap_or(false);
            let agent = rng.below(t.agents.len());
            let ring_end = now + rng.range(3_000, 25_000);
            let hold = if answered && rng.chance(0.2) {
                rng.range(5_000, 60_000)
            } else {
                0
            };
            end = if answered {
                ring_end + hold + rng.range(20_000, 600_000)
            } else {
                ring_end
            };
            offers.push(Offer {
                agent,
                visit: None,
                start: now,
                ring_end,
                answered,
                end,
                hold_ms: hold,
                end_reason: if answered { "COMPLETED" } else { "NO_ANSWER" },
            });
            if !answered {
                customer_no_answer = true;
                terminated = "NO_ANSWER";
            } else {
                terminated = "AGENT_HANGUP";
            }
        } else if plan.caller_hangs_up_in_ivr {
            end = now;
        } else {
            let n_visits = plan.visits.len();
            // Agents already offered this call are not offered again.
            let mut used: Vec<usize> = Vec::new();
            end = now;
            for (vi, answers) in plan.visits.iter().enumerate() {
                let queue = if t.queues.len() > 1 {
                    let prev = visits.last().map(|v: &QueueVisit| v.queue);
                    let mut q = rng.below(t.queues.len());
                    if Some(q) == prev {
                        q = (q + 1) % t.queues.len();
                    }
                    q
                } else {
                    0
                };
                let enter = now;
                now += rng.range(1_000, 30_000); // waiting before the first ring
                let first_offer = offers.len();
                let mut answered_at = None;
                for &answers_this in answers {
                    let mut agent = rng.below(t.agents.len());
                    for _ in 0..t.agents.len() {
                        if !used.contains(&agent) {
                            break;
                        }
                        agent = (agent + 1) % t.agents.len();
                    }
                    used.push(agent);
                    let ring_end = now + rng.range(5_000, 25_000);
                    if answers_this {
                        let hold = if rng.chance(0.2) {
                            rng.range(5_000, 60_000)
                        } else {
                            0
                        };
                        let call_end = ring_end + hold + rng.range(20_000, 600_000);
                        offers.push(Offer {
                            agent,
                            visit: Some(vi),
                            start: now,
                            ring_end,
                            answered: true,
                            end: call_end,
                            hold_ms: hold,
                            end_reason: "COMPLETED",
                        });
                        answered_at = Some(ring_end);
                        now = ring_end;
                        break;
                    }
                    offers.push(Offer {
                        agent,
                        visit: Some(vi),
                        start: now,
                        ring_end,
                        answered: false,
                        end: ring_end,
                        hold_ms: 0,
                        end_reason: "NO_ANSWER",
                    });
                    now = ring_end + rng.range(500, 5_000);
                }
                let last_visit = vi + 1 == n_visits;
                let (exit, rec_end, fail) = match answered_at {
                    Some(at) => {
                        let call_end = offers.last().map(|o: &Offer| o.end).unwrap_or(at);
                        (at, call_end, None)
                    }
                    None if last_visit => (now, now, Some("TIMEOUT")),
                    None => (now, now, Some("TRANSFER_NO_ANSWER")),
                };
                let q = &t.queues[queue];
                let _ = q;
                visits.push(QueueVisit {
                    queue,
                    enter,
                    exit,
                    end: rec_end,
                    answered_at,
                    fail_reason: fail,
                    from_transfer: vi > 0,
                    offers: first_offer..offers.len(),
                    free_agents: rng.range(0, t.agents.len() as i64),
                    talking_agents: rng.range(0, t.agents.len() as i64),
                });
                end = rec_end;
                if answered_at.is_some() {
                    terminated = if rng.chance(0.5) {
                        "CALLER_HANGUP"
                    } else {
                        "AGENT_HANGUP"
                    };
                    break;
                }
                if last_visit {
                    if plan.voicemail {
                        voicemail = true;
                        end = now + rng.range(10_000, 60_000);
                        terminated = "VOICEMAIL";
                    } else {
                        customer_no_answer = true;
                        terminated = "CALLER_HANGUP";
                    }
                }
            }
        }
        Journey {
            tenant,
            k,
            start,
            end: end.min(start + MAX_JOURNEY_MS),
            direction: plan.direction,
            internal: plan.direction == Direction::Outgoing && rng.chance(0.1),
            ivr,
            visits,
            offers,
            voicemail,
            recorded: rng.chance(0.3),
            customer_no_answer,
            terminated_reason: terminated,
        }
    }

    pub fn answered_offer(&self) -> Option<&Offer> {
        self.offers.iter().find(|o| o.answered)
    }

    /// Start time of a record (its `time.start`; the key that puts it in a
    /// historic window).
    pub fn record_start(&self, r: RecordRef) -> i64 {
        match r {
            RecordRef::Call => self.start,
            RecordRef::Queue(v) => self.visits[v].enter,
            RecordRef::Agent(o) => self.offers[o].start,
        }
    }

    /// Every record this journey produces.
    pub fn records(&self) -> impl Iterator<Item = RecordRef> + '_ {
        std::iter::once(RecordRef::Call)
            .chain((0..self.visits.len()).map(RecordRef::Queue))
            .chain((0..self.offers.len()).map(RecordRef::Agent))
    }

    /// Times at which a record's state changes (each is a live push).
    pub fn record_updates(&self, r: RecordRef) -> Vec<i64> {
        let mut v = match r {
            RecordRef::Call => {
                let mut v = vec![self.start];
                v.extend(self.visits.iter().map(|q| q.enter));
                v.extend(self.answered_offer().and_then(|o| o.answered_at()));
                v.push(self.end);
                v
            }
            RecordRef::Queue(i) => {
                let q = &self.visits[i];
                let mut v = vec![q.enter];
                v.extend(q.answered_at);
                v.push(q.end);
                v
            }
            RecordRef::Agent(i) => {
                let o = &self.offers[i];
                let mut v = vec![o.start];
                v.extend(o.answered_at());
                v.push(o.end);
                v
            }
        };
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The last state change of a record at or before `at` (`None` if the
    /// record does not exist yet). Rendering at this time instead of `at` is
    /// what makes the historic state equal the last live push exactly.
    pub fn record_effective_time(&self, r: RecordRef, at: i64) -> Option<i64> {
        self.record_updates(r).into_iter().rev().find(|t| *t <= at)
    }

    /// All live events of this journey, sorted by time.
    pub fn events(&self) -> Vec<(i64, JourneyEvent)> {
        let mut ev = Vec::new();
        for r in self.records() {
            for t in self.record_updates(r) {
                ev.push((t, JourneyEvent::Record(r)));
            }
        }
        for (i, o) in self.offers.iter().enumerate() {
            ev.push((o.start, JourneyEvent::AgentCallState(i)));
            if let Some(a) = o.answered_at() {
                ev.push((a, JourneyEvent::AgentCallState(i)));
            }
            ev.push((o.end, JourneyEvent::AgentCallState(i)));
        }
        ev.sort_by_key(|(t, e)| (*t, event_order(e)));
        ev.dedup();
        ev
    }
}

fn event_order(e: &JourneyEvent) -> (u8, usize) {
    match e {
        JourneyEvent::Record(RecordRef::Call) => (0, 0),
        JourneyEvent::Record(RecordRef::Queue(i)) => (1, *i),
        JourneyEvent::Record(RecordRef::Agent(i)) => (2, *i),
        JourneyEvent::AgentCallState(i) => (3, *i),
    }
}

// ---------------------------------------------------------- queue login

/// An agent logging out of one of its queues and back in within one UTC
/// hour: the queue-login changes §2.4 says `/profile_live` fires on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueBreak {
    pub queue: usize,
    pub out_at: i64,
    pub back_at: i64,
}

/// The queue break of one agent in UTC hour `hour` (epoch hours), if any.
/// Pure and O(1); breaks start and end inside their hour.
pub fn queue_break(world: &World, tenant: usize, agent: usize, hour: i64) -> Option<QueueBreak> {
    let queues = &world.tenants[tenant].agents[agent].queues;
    let mut rng = Rng::new(&[
        world.seed,
        TAG_QUEUE_BREAK,
        tenant as u64,
        agent as u64,
        hour as u64,
    ]);
    if queues.is_empty() || !rng.chance(0.3) {
        return None;
    }
    let queue = queues[rng.below(queues.len())];
    let out = rng.range(60_000, HOUR_MS - 10 * 60_000);
    let back = out + rng.range(60_000, 8 * 60_000);
    Some(QueueBreak {
        queue,
        out_at: hour * HOUR_MS + out,
        back_at: hour * HOUR_MS + back,
    })
}

/// (queue index, since when) of each queue in one login state.
pub type QueueStates = Vec<(usize, i64)>;

/// An agent's queue-login state at `at`: (queue, since when) of the queues
/// it is logged in to, and of those it is logged out of. Its own queues
/// are logged in since `login_start` but for breaks (looked for back to
/// [`PRESENCE_HORIZON_HOURS`]); the tenant's other queues are logged out
/// since `login_start`.
pub fn queue_login_at(
    world: &World,
    tenant: usize,
    agent: usize,
    at: i64,
    login_start: i64,
) -> (QueueStates, QueueStates) {
    let t = &world.tenants[tenant];
    let own = &t.agents[agent].queues;
    let hour = at.div_euclid(HOUR_MS);
    let mut since: Vec<(usize, i64, bool)> = own.iter().map(|q| (*q, login_start, true)).collect();
    // Oldest first, so the latest change of each queue wins.
    for h in (hour - PRESENCE_HORIZON_HOURS)..=hour {
        let Some(b) = queue_break(world, tenant, agent, h) else {
            continue;
        };
        let Some(entry) = since.iter_mut().find(|(q, _, _)| *q == b.queue) else {
            continue;
        };
        if b.back_at <= at {
            *entry = (b.queue, b.back_at, true);
        } else if b.out_at <= at {
            *entry = (b.queue, b.out_at, false);
        }
    }
    let logged_in = since.iter().filter(|e| e.2).map(|e| (e.0, e.1)).collect();
    let mut logged_out: Vec<(usize, i64)> =
        since.iter().filter(|e| !e.2).map(|e| (e.0, e.1)).collect();
    logged_out.extend(
        (0..t.queues.len())
            .filter(|q| !own.contains(q))
            .map(|q| (q, login_start)),
    );
    (logged_in, logged_out)
}

// ---------------------------------------------------------------- presence

/// A change of an agent's presence profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceChange {
    pub at: i64,
    pub profile: usize,
}

fn hour_entry_profile(world: &World, tenant: usize, agent: usize, hour: i64) -> usize {
    let mut rng = Rng::new(&[
        world.seed,
        TAG_PRESENCE_ENTRY,
        tenant as u64,
        agent as u64,
        hour as u64,
    ]);
    // Mostly available: real contact centres are.
    if rng.chance(0.6) {
        0
    } else {
        rng.below(PROFILES.len())
    }
}

/// The presence changes of one agent during UTC hour `hour` (epoch hours):
/// from the hour's entry profile, maybe through one other profile, to the
/// next hour's entry profile. Pure and O(1).
pub fn presence_changes(
    world: &World,
    tenant: usize,
    agent: usize,
    hour: i64,
) -> Vec<PresenceChange> {
    // Memoized per thread: profile_live look-ups scan many hours per event.
    // The result is a pure function of the key, so the cache is always right.
    type Key = (u64, usize, usize, i64);
    thread_local! {
        static CACHE: std::cell::RefCell<HashMap<Key, Vec<PresenceChange>>> = std::cell::RefCell::new(HashMap::new());
    }
    let key = (world.seed, tenant, agent, hour);
    if let Some(hit) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
        return hit;
    }
    let computed = compute_presence_changes(world, tenant, agent, hour);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= 16_384 {
            c.clear();
        }
        c.insert(key, computed.clone());
    });
    computed
}

fn compute_presence_changes(
    world: &World,
    tenant: usize,
    agent: usize,
    hour: i64,
) -> Vec<PresenceChange> {
    let from = hour_entry_profile(world, tenant, agent, hour);
    let to = hour_entry_profile(world, tenant, agent, hour + 1);
    let mut rng = Rng::new(&[
        world.seed,
        TAG_PRESENCE_HOUR,
        tenant as u64,
        agent as u64,
        hour as u64,
    ]);
    let mut seq = Vec::new();
    if rng.chance(0.5) {
        let mut mid = rng.below(PROFILES.len());
        while mid == from || mid == to {
            mid = (mid + 1) % PROFILES.len();
        }
        seq.push(mid);
    }
    if seq.last().copied().unwrap_or(from) != to {
        seq.push(to);
    }
    let mut times: Vec<i64> = seq
        .iter()
        .map(|_| rng.range(60_000, HOUR_MS - 60_000))
        .collect();
    times.sort_unstable();
    times.dedup();
    let base = hour * HOUR_MS;
    let n = times.len().min(seq.len());
    // If two draws collided, keep the final destination so hours stay continuous.
    let seq = &seq[seq.len() - n..];
    let mut prev = from;
    let mut out = Vec::with_capacity(n);
    for (t, p) in times.iter().zip(seq) {
        if *p != prev {
            out.push(PresenceChange {
                at: base + t,
                profile: *p,
            });
            prev = *p;
        }
    }
    out
}

/// Agent's profile at `at` and when it became active (searching back at most
/// `PRESENCE_HORIZON_HOURS`; older starts are reported as that horizon).
pub fn presence_at(world: &World, tenant: usize, agent: usize, at: i64) -> (usize, i64) {
    let hour = at.div_euclid(HOUR_MS);
    let profile = presence_changes(world, tenant, agent, hour)
        .into_iter()
        .rev()
        .find(|c| c.at <= at)
        .map(|c| c.profile)
        .unwrap_or_else(|| hour_entry_profile(world, tenant, agent, hour));
    (
        profile,
        last_entered(world, tenant, agent, profile, at, true)
            .unwrap_or((hour - PRESENCE_HORIZON_HOURS) * HOUR_MS),
    )
}

/// When `profile` was last entered at or before `at` (`continuous`: only if it
/// is still active at `at`, i.e. the start of the current run).
pub fn last_entered(
    world: &World,
    tenant: usize,
    agent: usize,
    profile: usize,
    at: i64,
    continuous: bool,
) -> Option<i64> {
    let hour = at.div_euclid(HOUR_MS);
    for h in (hour - PRESENCE_HORIZON_HOURS..=hour).rev() {
        let changes = presence_changes(world, tenant, agent, h);
        for c in changes.iter().rev().filter(|c| c.at <= at) {
            if c.profile == profile {
                return Some(c.at);
            } else if continuous {
                return None;
            }
        }
    }
    None
}

/// How far back presence look-ups search for when a profile was entered.
pub const PRESENCE_HORIZON_HOURS: i64 = 24;

/// An agent's presence at one instant, computed in one backward pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceView {
    pub active: usize,
    /// When the active profile was entered (horizon start if earlier).
    pub since: i64,
    /// When each profile was last entered at or before the instant.
    pub last_entered: [Option<i64>; PROFILES.len()],
}

pub fn presence_view(world: &World, tenant: usize, agent: usize, at: i64) -> PresenceView {
    let hour = at.div_euclid(HOUR_MS);
    let mut last = [None; PROFILES.len()];
    let mut found = 0;
    let mut current_hour_active = None;
    for h in (hour - PRESENCE_HORIZON_HOURS..=hour).rev() {
        for c in presence_changes(world, tenant, agent, h)
            .iter()
            .rev()
            .filter(|c| c.at <= at)
        {
            if h == hour && current_hour_active.is_none() {
                current_hour_active = Some(c.profile);
            }
            if last[c.profile].is_none() {
                last[c.profile] = Some(c.at);
                found += 1;
            }
        }
        if found == PROFILES.len() {
            break;
        }
    }
    let active =
        current_hour_active.unwrap_or_else(|| hour_entry_profile(world, tenant, agent, hour));
    let since = last[active].unwrap_or((hour - PRESENCE_HORIZON_HOURS) * HOUR_MS);
    PresenceView {
        active,
        since,
        last_entered: last,
    }
}

/// One continuous profile period of an agent inside one UTC hour
/// (one profile_history record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceSlot {
    pub agent: usize,
    pub index: usize,
    pub start: i64,
    pub end: i64,
    pub profile: usize,
    /// The slot's profile is still active at the end of the hour.
    pub active_at_end: bool,
}

pub fn presence_slots(world: &World, tenant: usize, agent: usize, hour: i64) -> Vec<PresenceSlot> {
    let base = hour * HOUR_MS;
    let mut slots = Vec::new();
    let mut cur = (base, hour_entry_profile(world, tenant, agent, hour));
    for c in presence_changes(world, tenant, agent, hour) {
        slots.push((cur.0, c.at, cur.1));
        cur = (c.at, c.profile);
    }
    slots.push((cur.0, base + HOUR_MS, cur.1));
    let n = slots.len();
    slots
        .into_iter()
        .enumerate()
        .map(|(i, (s, e, p))| PresenceSlot {
            agent,
            index: i,
            start: s,
            end: e,
            profile: p,
            active_at_end: i + 1 == n,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World::new(42, 1_779_099_997_234, 1, 10, 3, 1.0, 1.0, 0)
    }

    #[test]
    fn queue_breaks_log_an_agent_out_and_back_in() {
        let w = world();
        let hour = w.epoch_ms.div_euclid(HOUR_MS);
        let breaks: Vec<(usize, QueueBreak)> = (0..10)
            .flat_map(|a| (hour..hour + 24).map(move |h| (a, h)))
            .filter_map(|(a, h)| Some((a, queue_break(&w, 0, a, h)?)))
            .collect();
        assert!(
            breaks.len() > 10,
            "queue-login changes happen: {}",
            breaks.len()
        );
        for (agent, b) in breaks {
            assert!(w.tenants[0].agents[agent].queues.contains(&b.queue));
            assert!(b.out_at < b.back_at, "{b:?}");
            assert_eq!(b.out_at.div_euclid(HOUR_MS), b.back_at.div_euclid(HOUR_MS));
            let state = |at| queue_login_at(&w, 0, agent, at, 0);
            let is_in = |at| state(at).0.iter().any(|(q, _)| *q == b.queue);
            let is_out = |at| state(at).1.contains(&(b.queue, b.out_at));
            assert!(is_in(b.out_at - 1) && !is_out(b.out_at - 1), "{b:?}");
            assert!(!is_in(b.out_at) && is_out(b.out_at), "{b:?}");
            assert!(state(b.back_at).0.contains(&(b.queue, b.back_at)), "{b:?}");
            // Every queue of the tenant is in exactly one of the lists.
            let (i, o) = state(b.out_at);
            assert_eq!(i.len() + o.len(), w.tenants[0].queues.len());
        }
    }

    #[test]
    fn worked_example_counts_hold() {
        let w = world();
        let mut rng = Rng::new(&[1]);
        let j = Journey::with_plan(&w, 0, 0, &JourneyPlan::worked_example(), &mut rng);
        let calls = j.records().filter(|r| *r == RecordRef::Call).count();
        let queues: Vec<_> = j.visits.iter().collect();
        let agents: Vec<_> = j.offers.iter().collect();
        assert_eq!(calls, 1);
        assert_eq!(queues.len(), 2);
        assert_eq!(queues.iter().filter(|q| q.answered_at.is_some()).count(), 1);
        assert!(queues[0].answered_at.is_none() && queues[1].answered_at.is_some());
        assert_eq!(agents.len(), 3);
        assert_eq!(agents.iter().filter(|o| !o.answered).count(), 2);
        assert!(agents[2].answered);
        // three different agents
        assert!(
            agents[0].agent != agents[1].agent
                && agents[1].agent != agents[2].agent
                && agents[0].agent != agents[2].agent
        );
        assert!(j.answered_offer().is_some());
    }

    #[test]
    fn generator_produces_the_worked_example_shape() {
        let w = world();
        let found = (0..20_000).map(|k| w.journey(0, k)).find(|j| {
            j.ivr.is_some()
                && j.visits.len() == 2
                && j.visits[0].offers.len() == 2
                && j.visits[1].offers.len() == 1
                && j.offers[2].answered
        });
        let j = found.expect("the random generator never produced the § 1.2 journey");
        assert_eq!(j.records().count(), 1 + 2 + 3);
    }

    #[test]
    fn journeys_are_deterministic_and_bounded() {
        let w = world();
        for k in -50..500 {
            let a = w.journey(0, k);
            let b = w.journey(0, k);
            assert_eq!(a.events(), b.events());
            assert!(a.end - a.start <= MAX_JOURNEY_MS);
            for r in a.records() {
                let s = a.record_start(r);
                assert!(
                    s >= a.start && s - a.start <= MAX_RECORD_OFFSET_MS,
                    "{r:?} {}",
                    s - a.start
                );
            }
            assert!(w.journey_start(0, k) <= w.journey_start(0, k + 1));
        }
    }

    #[test]
    fn journeys_starting_in_is_exact() {
        let w = World::new(7, 1_000_000, 2, 5, 2, 3.0, 10.0, 1);
        let (from, to) = (w.epoch_ms - 100_000, w.epoch_ms + 200_000);
        let r = w.journeys_starting_in(1, from, to);
        for k in (r.start() - 5)..=(r.end() + 5) {
            let s = w.journey_start(1, k);
            let inside = s >= from && s < to && k >= w.k_min;
            assert_eq!(r.contains(&k), inside, "k={k}");
        }
    }

    #[test]
    fn presence_view_agrees_with_slots() {
        let w = world();
        for h in 490_000..490_010 {
            for slot in presence_slots(&w, 0, 2, h) {
                for at in [slot.start, (slot.start + slot.end) / 2, slot.end - 1] {
                    let v = presence_view(&w, 0, 2, at);
                    assert_eq!(v.active, slot.profile);
                    assert_eq!(presence_at(&w, 0, 2, at), (v.active, v.since));
                    assert!(v.since <= slot.start);
                }
            }
        }
    }

    #[test]
    fn presence_is_continuous_across_hours() {
        let w = world();
        for h in 490_000..490_050 {
            let slots = presence_slots(&w, 0, 3, h);
            let next = presence_slots(&w, 0, 3, h + 1);
            assert_eq!(
                slots.last().map(|s| s.profile),
                next.first().map(|s| s.profile)
            );
            for pair in slots.windows(2) {
                assert_ne!(pair[0].profile, pair[1].profile);
                assert_eq!(pair[0].end, pair[1].start);
            }
        }
    }
}
