//! `studio-relay schemas`: export the generated schema files, or check that the
//! checked-in ones equal them and that every version can read the one before.

use std::path::{Path, PathBuf};

use crate::encode;
use crate::model::DataSource;

#[derive(Debug, clap::Subcommand)]
pub enum SchemasCommand {
    /// Write the schema files of every source into a directory.
    Export {
        /// `avro` (.avsc) or `json` (JSON Schema 2020-12).
        #[arg(long, value_enum)]
        format: SchemaFormat,
        /// Target directory (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Check that DIR/avro and DIR/json equal what this build writes, and that
    /// each Avro version of a source can read data written with the previous one.
    Check {
        #[arg(long, default_value = "schemas")]
        dir: PathBuf,
    },
    /// Write the AsyncAPI 3 document of every topic/subject (keys, CloudEvents
    /// headers, payload schemas); `docs/asyncapi.yaml` is this output.
    Asyncapi {
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SchemaFormat {
    Avro,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemasError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} differs from the schema this build writes; run `studio-relay schemas export` and review the change")]
    Drift(PathBuf),
    #[error("{path} is not a valid Avro schema: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{newer} cannot read data written with {older}: {message}")]
    Incompatible {
        older: PathBuf,
        newer: PathBuf,
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SchemasError + '_ {
    move |source| SchemasError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// (relative file name, generated content) of every schema file.
pub fn generated(format: SchemaFormat) -> Vec<(String, String)> {
    DataSource::ALL
        .iter()
        .map(|s| match format {
            SchemaFormat::Avro => (
                format!("{}.v{}.avsc", s.as_str(), encode::SCHEMA_VERSION),
                encode::avro_schema_json(*s),
            ),
            SchemaFormat::Json => (
                format!("{}.v{}.schema.json", s.as_str(), encode::SCHEMA_VERSION),
                serde_json::to_string_pretty(&encode::json_schema(*s)).expect("serializes") + "\n",
            ),
        })
        .collect()
}

pub fn run(cmd: SchemasCommand) -> Result<(), SchemasError> {
    match cmd {
        SchemasCommand::Export { format, out } => {
            std::fs::create_dir_all(&out).map_err(io(&out))?;
            for (name, text) in generated(format) {
                let path = out.join(name);
                std::fs::write(&path, text).map_err(io(&path))?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        SchemasCommand::Asyncapi { out } => {
            let text = super::asyncapi::yaml();
            match out {
                Some(path) => {
                    std::fs::write(&path, text).map_err(io(&path))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        SchemasCommand::Check { dir } => {
            for (format, sub) in [(SchemaFormat::Avro, "avro"), (SchemaFormat::Json, "json")] {
                for (name, text) in generated(format) {
                    let path = dir.join(sub).join(name);
                    let on_disk = std::fs::read_to_string(&path).map_err(io(&path))?;
                    if on_disk != text {
                        return Err(SchemasError::Drift(path));
                    }
                }
            }
            check_evolution(&dir.join("avro"))?;
            eprintln!(
                "schemas in {} are current and backward compatible",
                dir.display()
            );
            Ok(())
        }
    }
}

/// For every source, each `<source>.vN.avsc` must read data written with the previous version.
pub fn check_evolution(avro_dir: &Path) -> Result<(), SchemasError> {
    for source in DataSource::ALL {
        let mut versions: Vec<(u32, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(avro_dir).map_err(io(avro_dir))? {
            let path = entry.map_err(io(avro_dir))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let Some(rest) = name.strip_prefix(&format!("{}.v", source.as_str())) else {
                continue;
            };
            if let Some(v) = rest.strip_suffix(".avsc").and_then(|v| v.parse().ok()) {
                versions.push((v, path));
            }
        }
        versions.sort();
        let parse = |p: &PathBuf| -> Result<apache_avro::Schema, SchemasError> {
            let text = std::fs::read_to_string(p).map_err(io(p))?;
            apache_avro::Schema::parse_str(&text).map_err(|e| SchemasError::Invalid {
                path: p.clone(),
                message: e.to_string(),
            })
        };
        for pair in versions.windows(2) {
            let (older, newer) = (parse(&pair[0].1)?, parse(&pair[1].1)?);
            apache_avro::schema_compatibility::SchemaCompatibility::can_read(&older, &newer)
                .map_err(|e| SchemasError::Incompatible {
                    older: pair[0].1.clone(),
                    newer: pair[1].1.clone(),
                    message: e.to_string(),
                })?;
        }
    }
    Ok(())
}
