//! The simulated network: directed links with latency, loss, duplication
//! and reordering, partitions, and broken connections. (Held and stalled
//! links park messages of the machine's type, so the engine keeps those.)
//!
//! Every link uses the scenario's default [`LinkConfig`] unless a per-link
//! override is set (by the scenario or by a scheduled `link` fault). Links are
//! stored sparsely, so a 10,000-peer star costs nothing per absent override.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::rng::Ratio;
use crate::time::Duration;
use crate::NodeId;

/// One-way delay of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    Fixed(Duration),
    /// Uniform over `lo..=hi` microseconds, drawn per message from the link's
    /// stream; two messages on one link may therefore arrive out of order.
    Uniform {
        lo: Duration,
        hi: Duration,
    },
}

impl Latency {
    pub fn draws(&self) -> bool {
        matches!(self, Latency::Uniform { lo, hi } if lo != hi)
    }
    /// The delay when it needs no draw (`draws()` is false).
    fn fixed(&self) -> Duration {
        match *self {
            Latency::Fixed(d) | Latency::Uniform { lo: d, .. } => d,
        }
    }
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> Duration {
        match *self {
            Latency::Uniform { lo, hi } if lo != hi => {
                Duration::from_us(rng.gen_range(lo.as_us()..=hi.as_us()))
            }
            _ => self.fixed(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    pub latency: Latency,
    pub drop: Ratio,
    pub duplicate: Ratio,
    /// Share of messages held back by an extra delay, uniform over
    /// `1..=reorder_delay` microseconds, so later messages overtake them.
    pub reorder: Ratio,
    pub reorder_delay: Duration,
}

/// How long a reordered message is held back at most, unless the scenario
/// says otherwise.
pub const DEFAULT_REORDER_DELAY: Duration = Duration::from_secs(1);

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency: Latency::Fixed(Duration::ZERO),
            drop: Ratio::NEVER,
            duplicate: Ratio::NEVER,
            reorder: Ratio::NEVER,
            reorder_delay: DEFAULT_REORDER_DELAY,
        }
    }
}

impl LinkConfig {
    /// Whether sending on this link consumes randomness at all.
    pub fn is_random(&self) -> bool {
        self.latency.draws()
            || !self.drop.is_never()
            || !self.duplicate.is_never()
            || !self.reorder.is_never()
    }

    /// One copy's delay: latency, then (only if `reorder` is not zero, so
    /// links without reordering draw exactly what they always drew) whether
    /// it is held back, and by how much.
    fn delay(&self, rng: &mut ChaCha8Rng) -> Duration {
        let latency = self.latency.sample(rng);
        if self.reorder.sample(rng) {
            let extra = rng.gen_range(1..=self.reorder_delay.as_us().max(1));
            latency + Duration::from_us(extra)
        } else {
            latency
        }
    }
}

/// A set of blocked directions: `from` nodes cannot reach `to` nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub from: BTreeSet<NodeId>,
    pub to: BTreeSet<NodeId>,
}

impl Partition {
    /// Every node in a group can reach only nodes of its own group. Nodes in
    /// no group are unaffected.
    pub fn symmetric(groups: &[Vec<NodeId>]) -> Vec<Partition> {
        let mut rules = Vec::new();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    rules.push(Partition {
                        from: a.iter().copied().collect(),
                        to: b.iter().copied().collect(),
                    });
                }
            }
        }
        rules
    }

    fn blocks(&self, from: NodeId, to: NodeId) -> bool {
        self.from.contains(&from) && self.to.contains(&to)
    }
}

/// What the network decided for one send.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// Deliver after `delay`, and a copy after `duplicate` if drawn.
    Deliver {
        delay: Duration,
        duplicate: Option<Duration>,
    },
    Lost,
    Partitioned,
}

#[derive(Debug)]
pub struct Network {
    seed: u64,
    default: LinkConfig,
    overrides: BTreeMap<(NodeId, NodeId), LinkConfig>,
    partitions: Vec<Partition>,
    broken: BTreeSet<(NodeId, NodeId)>,
    /// Lazily created per-link generators (only for random links).
    rngs: BTreeMap<(NodeId, NodeId), ChaCha8Rng>,
}

impl Network {
    pub fn new(seed: u64, default: LinkConfig) -> Self {
        Network {
            seed,
            default,
            overrides: BTreeMap::new(),
            partitions: Vec::new(),
            broken: BTreeSet::new(),
            rngs: BTreeMap::new(),
        }
    }

    pub fn set_default(&mut self, config: LinkConfig) {
        self.default = config;
    }
    pub fn set_link(&mut self, from: NodeId, to: NodeId, config: LinkConfig) {
        self.overrides.insert((from, to), config);
    }
    pub fn link(&self, from: NodeId, to: NodeId) -> &LinkConfig {
        self.overrides.get(&(from, to)).unwrap_or(&self.default)
    }
    pub fn partition(&mut self, rules: Vec<Partition>) {
        self.partitions.extend(rules);
    }
    pub fn heal(&mut self) {
        self.partitions.clear();
    }
    pub fn is_partitioned(&self) -> bool {
        !self.partitions.is_empty()
    }
    pub fn blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.partitions.iter().any(|p| p.blocks(from, to))
    }
    /// Sends on a broken direction fail at once (a reset connection), where a
    /// partitioned one swallows messages silently.
    pub fn break_link(&mut self, from: NodeId, to: NodeId) {
        self.broken.insert((from, to));
    }
    pub fn repair_link(&mut self, from: NodeId, to: NodeId) {
        self.broken.remove(&(from, to));
    }
    pub fn is_broken(&self, from: NodeId, to: NodeId) -> bool {
        self.broken.contains(&(from, to))
    }

    /// Decide one message's fate. Draw order per message is fixed: loss,
    /// delay (latency, reorder), duplicate, the duplicate's delay.
    pub fn route(&mut self, from: NodeId, to: NodeId, names: impl Fn(NodeId) -> String) -> Fate {
        if self.blocked(from, to) {
            return Fate::Partitioned;
        }
        let config = *self.link(from, to);
        if !config.is_random() {
            return Fate::Deliver {
                delay: config.latency.fixed(),
                duplicate: None,
            };
        }
        let seed = self.seed;
        let rng = self.rngs.entry((from, to)).or_insert_with(|| {
            crate::rng::stream(seed, &format!("net/{}/{}", names(from), names(to)))
        });
        if config.drop.sample(rng) {
            return Fate::Lost;
        }
        // Drawn in this order (delay, then duplicate and its delay) so
        // that traces replay as they were written.
        let delay = config.delay(rng);
        let duplicate = config.duplicate.sample(rng).then(|| config.delay(rng));
        Fate::Deliver { delay, duplicate }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: NodeId) -> String {
        format!("n{}", n.0)
    }

    #[test]
    fn one_way_partition_blocks_one_direction() {
        let mut net = Network::new(1, LinkConfig::default());
        net.partition(vec![Partition {
            from: [NodeId(0)].into(),
            to: [NodeId(1)].into(),
        }]);
        assert_eq!(net.route(NodeId(0), NodeId(1), name), Fate::Partitioned);
        assert_eq!(
            net.route(NodeId(1), NodeId(0), name),
            Fate::Deliver {
                delay: Duration::ZERO,
                duplicate: None
            }
        );
        net.heal();
        assert_eq!(
            net.route(NodeId(0), NodeId(1), name),
            Fate::Deliver {
                delay: Duration::ZERO,
                duplicate: None
            }
        );
    }

    #[test]
    fn symmetric_partition_spares_nodes_in_no_group() {
        let mut net = Network::new(1, LinkConfig::default());
        net.partition(Partition::symmetric(&[vec![NodeId(0)], vec![NodeId(1)]]));
        assert!(net.blocked(NodeId(0), NodeId(1)));
        assert!(net.blocked(NodeId(1), NodeId(0)));
        assert!(!net.blocked(NodeId(0), NodeId(2)));
    }

    #[test]
    fn reorder_holds_back_a_share_of_messages_and_lets_others_overtake() {
        let config = LinkConfig {
            latency: Latency::Fixed(Duration::from_ms(10)),
            reorder: Ratio::new(1, 4).unwrap(),
            reorder_delay: Duration::from_ms(200),
            ..LinkConfig::default()
        };
        let mut net = Network::new(5, config);
        let arrivals: Vec<u64> = (0..2_000u64)
            .map(|i| match net.route(NodeId(0), NodeId(1), name) {
                // Sent 1 ms apart.
                Fate::Deliver { delay, .. } => i * 1_000 + delay.as_us(),
                other => panic!("{other:?}"),
            })
            .collect();
        let late = arrivals
            .iter()
            .enumerate()
            .filter(|(i, t)| **t > *i as u64 * 1_000 + 10_000)
            .count();
        assert!(
            (400..600).contains(&late),
            "{late} of 2000 held back at 1/4"
        );
        assert!(arrivals.iter().all(|t| *t <= 2_000_000 + 210_000));
        let overtaken = arrivals.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(
            overtaken > 300,
            "only {overtaken} pairs arrived out of order"
        );
    }

    #[test]
    fn zero_reorder_draws_nothing_extra() {
        // Traces written before `reorder` existed must not change.
        let uniform = LinkConfig {
            latency: Latency::Uniform {
                lo: Duration::from_ms(50),
                hi: Duration::from_ms(150),
            },
            ..LinkConfig::default()
        };
        let mut a = Network::new(9, uniform);
        let mut rng = crate::rng::stream(9, "net/n0/n1");
        for _ in 0..100 {
            let want = uniform.latency.sample(&mut rng);
            assert_eq!(
                a.route(NodeId(0), NodeId(1), name),
                Fate::Deliver {
                    delay: want,
                    duplicate: None
                }
            );
        }
    }

    #[test]
    fn loss_rate_is_roughly_honoured_and_reproducible() {
        let lossy = LinkConfig {
            drop: Ratio::new(1, 10).unwrap(),
            ..LinkConfig::default()
        };
        let run = |seed| {
            let mut net = Network::new(seed, lossy);
            (0..10_000)
                .map(|_| net.route(NodeId(0), NodeId(1), name) == Fate::Lost)
                .collect::<Vec<_>>()
        };
        let a = run(3);
        assert_eq!(a, run(3));
        assert_ne!(a, run(4));
        let lost = a.iter().filter(|l| **l).count();
        assert!((800..1200).contains(&lost), "lost {lost} of 10000 at 1/10");
    }
}
