//! The five Studio API data sources (reference §1.1).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One of the five data sources. The name is the live path without the slash,
/// the GraphQL root query (where there is one), and the `{source}` of topic templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    Calls,
    Queues,
    Agents,
    ProfileLive,
    ProfileHistory,
}

impl DataSource {
    pub const ALL: [DataSource; 5] = [
        DataSource::Calls,
        DataSource::Queues,
        DataSource::Agents,
        DataSource::ProfileLive,
        DataSource::ProfileHistory,
    ];

    /// The four sources with a historic (GraphQL) layer.
    pub const HISTORIC: [DataSource; 4] = [
        DataSource::Calls,
        DataSource::Queues,
        DataSource::Agents,
        DataSource::ProfileHistory,
    ];

    /// Position in [`DataSource::ALL`] (for per-source tables).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataSource::Calls => "calls",
            DataSource::Queues => "queues",
            DataSource::Agents => "agents",
            DataSource::ProfileLive => "profile_live",
            DataSource::ProfileHistory => "profile_history",
        }
    }

    /// How long after a record's time (its start; profile_history: its
    /// slot's start) its live push may come: `/profile_history` pushes the
    /// hour's batch at the next HH:00, the other sockets as things happen.
    /// A gap in the live pushes misses records up to this much older than
    /// the gap, so backfill reaches back this much further.
    pub fn push_delay_ms(self) -> i64 {
        match self {
            DataSource::ProfileHistory => 3_600_000,
            _ => 0,
        }
    }

    /// The longest [`DataSource::push_delay_ms`].
    pub const MAX_PUSH_DELAY_MS: i64 = 3_600_000;

    /// The WebSocket path, e.g. `/calls`.
    pub fn live_path(self) -> &'static str {
        match self {
            DataSource::Calls => "/calls",
            DataSource::Queues => "/queues",
            DataSource::Agents => "/agents",
            DataSource::ProfileLive => "/profile_live",
            DataSource::ProfileHistory => "/profile_history",
        }
    }

    /// The GraphQL root query, `None` for `profile_live` (live only).
    pub fn graphql_root(self) -> Option<&'static str> {
        match self {
            DataSource::ProfileLive => None,
            other => Some(other.as_str()),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataSource::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown data source {s:?}; expected one of calls, queues, agents, profile_live, profile_history"))
    }
}
