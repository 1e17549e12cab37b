//! The one place a command's publishing path is put together: the encoder
//! (with the registry's schema ids when one is configured), the message
//! builder, the destinations prepared on the sink, and the publisher behind
//! its intake (through the on-disk spool when one is configured).

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::DataSource;
use crate::ops::Metrics;
use crate::publish::message_builder::MessageBuilder;
use crate::publish::publisher::{self, Outstanding, PublisherSettings, PublisherStats};
use crate::publish::spool::{Intake, Spool, SpoolError, SpoolSettings};
use crate::registry::RegistryError;
use crate::sink::{Sink, SinkError};

/// Why the publishing path could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("schema registry: {0}")]
    Registry(RegistryError),
    #[error("sink: {0}")]
    Sink(#[from] SinkError),
    #[error("{0}")]
    Spool(#[from] SpoolError),
}

/// What a command publishes and how.
pub struct PipelineSettings<'a> {
    /// The sources whose destinations are prepared on the sink.
    pub sources: &'a [DataSource],
    pub publisher: PublisherSettings,
    /// Messages the publisher's queue holds.
    pub queue_capacity: usize,
    /// Where messages go while the queue is full; None: back-pressure.
    pub spool: Option<SpoolSettings>,
}

/// A started publishing path.
pub struct Pipeline {
    pub builder: Arc<MessageBuilder>,
    /// The way in. The publisher ends once every clone is dropped and
    /// everything handed in is settled.
    pub intake: Intake,
    /// Messages not yet settled (for the shutdown report).
    pub outstanding: Arc<Outstanding>,
    pub publisher: JoinHandle<PublisherStats>,
}

/// Encoder → builder → destinations prepared → publisher, for `config`'s
/// tenants.
pub async fn start(
    config: &Config,
    sink: &Arc<dyn Sink>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
    settings: PipelineSettings<'_>,
) -> Result<Pipeline, PipelineError> {
    let tenants: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
    let encoder = crate::registry::encoder_for(config, &tenants, metrics, shutdown)
        .await
        .map_err(PipelineError::Registry)?;
    let builder = Arc::new(MessageBuilder::new(encoder, &config.sink));
    let destinations = builder.all_destinations(tenants.iter().copied(), settings.sources);
    sink.prepare(&destinations).await?;
    let (tx, outstanding, publisher) = publisher::spawn(
        sink.clone(),
        builder.clone(),
        metrics.clone(),
        settings.publisher,
        settings.queue_capacity,
    );
    let intake = match settings.spool {
        None => Intake::direct(tx),
        Some(spool) => Intake::spooled(tx, Spool::open_off_runtime(spool, metrics.clone()).await?),
    };
    Ok(Pipeline {
        builder,
        intake,
        outstanding,
        publisher,
    })
}
