//! The historic layer: `POST /graphql` with the § 3 schema.
//!
//! The schema is built at start from the § 3.2-3.5 field references
//! (`specs/historic_*.json`) with async-graphql's dynamic schema, so field
//! names and types are exactly the documented ones. Record types are
//! `CallOverviewRecord`, `QueueOverviewRecord`, `AgentOverviewRecord`,
//! `ProfileHistoryOverviewRecord` (connections `...Connection`); nested
//! object types are named after their path (`CallOverviewRecordAgentFirst`).
//!
//! Conventions: `DateTime` is an ISO-8601 UTC string with milliseconds;
//! profile_history `Float` times are epoch milliseconds; windows are
//! half-open `[startDate, endDate)`; `first` is capped at [`MAX_FIRST`];
//! cursors are opaque strings (`c1.<hex>`); `totalCount` counts the date
//! window only (other filters do not shrink it), as documented.

use std::sync::Arc;

use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputObject, InputValue, Object, ResolverContext, Scalar,
    Schema, TypeRef,
};
use async_graphql::Value as GqlValue;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::journey::{Source, World};
use super::render::{historic_record, parse_iso, SPECS};
use super::stats::bump;
use super::window::{count, page, CountCache, RecordKey};
use super::{plain, AppState};

/// Largest page; larger `first` values are reduced to it.
pub const MAX_FIRST: i64 = 1000;
/// The reference's error for a root query without startDate and endDate.
pub const MISSING_DATES_ERROR: &str = "too_long_http_line_exception";

const ROOTS: [(&str, Source, &str); 4] = [
    ("calls", Source::Calls, "CallOverview"),
    ("queues", Source::Queues, "QueueOverview"),
    ("agents", Source::Agents, "AgentOverview"),
    (
        "profile_history",
        Source::ProfileHistory,
        "ProfileHistoryOverview",
    ),
];

/// The GraphQL half of the simulator.
pub struct Historic {
    schema: Schema,
    counts: Arc<CountCache>,
}

/// What a request's resolvers need.
#[derive(Clone)]
struct RequestCtx {
    world: Arc<World>,
    counts: Arc<CountCache>,
    tenant: usize,
    now: i64,
}

/// Filters of `OverviewFilter` besides the dates.
#[derive(Clone, Debug, Default)]
struct Filter {
    queue_id: Option<i64>,
    queue_account_id: Option<i64>,
    queue_name: Option<String>,
    ivr_id: Option<i64>,
    ivr_account_id: Option<i64>,
    ivr_name: Option<String>,
    agent_id: Option<i64>,
    agent_account_id: Option<i64>,
    agent_name: Option<String>,
    call_id: Option<String>,
}

fn related(
    full: &Value,
    key: &str,
    id: Option<i64>,
    account_id: Option<i64>,
    name: Option<&str>,
) -> bool {
    if id.is_none() && account_id.is_none() && name.is_none() {
        return true;
    }
    full.get(key).and_then(Value::as_array).is_some_and(|list| {
        list.iter().any(|e| {
            id.is_none_or(|v| e.get(0).and_then(Value::as_i64) == Some(v))
                && account_id.is_none_or(|v| e.get(1).and_then(Value::as_i64) == Some(v))
                && name.is_none_or(|v| e.get(2).and_then(Value::as_str) == Some(v))
        })
    })
}

impl Filter {
    fn matches(&self, full: &Value) -> bool {
        related(
            full,
            "_queues",
            self.queue_id,
            self.queue_account_id,
            self.queue_name.as_deref(),
        ) && related(
            full,
            "_ivrs",
            self.ivr_id,
            self.ivr_account_id,
            self.ivr_name.as_deref(),
        ) && related(
            full,
            "_agents",
            self.agent_id,
            self.agent_account_id,
            self.agent_name.as_deref(),
        ) && self.call_id.as_deref().is_none_or(|c| {
            full.get("_calls")
                .and_then(Value::as_array)
                .is_some_and(|l| l.iter().any(|x| x.as_str() == Some(c)))
        })
    }
}

/// One computed page, the parent value of a connection.
struct Page {
    records: Vec<Value>,
    total: u64,
    cursor: Option<String>,
    has_next: bool,
}

fn pascal(s: &str) -> String {
    let mut out = String::new();
    let mut up = true;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Registers the object type for `spec` named `name` (and its nested types).
fn object_types(name: &str, spec: &Value, out: &mut Vec<Object>) {
    let mut obj = Object::new(name);
    if let Value::Object(fields) = spec {
        for (field, ty) in fields {
            let fname = field.clone();
            let type_ref = match ty {
                Value::String(t) if t == "[String!]" => TypeRef::named_nn_list(TypeRef::STRING),
                Value::String(t) => TypeRef::named(t.as_str()),
                Value::Object(_) => {
                    let nested = format!("{name}{}", pascal(field));
                    object_types(&nested, ty, out);
                    TypeRef::named(nested)
                }
                Value::Array(items) => {
                    let nested = format!("{name}{}", pascal(field));
                    object_types(&nested, items.first().unwrap_or(&Value::Null), out);
                    TypeRef::named_nn_list(nested)
                }
                _ => TypeRef::named(TypeRef::STRING),
            };
            let is_object = matches!(ty, Value::Object(_));
            let is_object_list = matches!(ty, Value::Array(_));
            obj = obj.field(Field::new(
                field.as_str(),
                type_ref,
                move |ctx: ResolverContext<'_>| {
                    let parent = ctx.parent_value.downcast_ref::<Value>();
                    let child = parent.and_then(|p| p.get(&fname)).filter(|v| !v.is_null());
                    FieldFuture::Value(child.and_then(|v| {
                        if is_object {
                            v.is_object().then(|| FieldValue::borrowed_any(v))
                        } else if is_object_list {
                            v.as_array().map(|items| {
                                FieldValue::list(items.iter().map(|x| FieldValue::borrowed_any(x)))
                            })
                        } else {
                            GqlValue::from_json(v.clone()).ok().map(FieldValue::value)
                        }
                    }))
                },
            ));
        }
    }
    out.push(obj);
}

fn opt_i64(
    filter: &async_graphql::dynamic::ObjectAccessor<'_>,
    name: &str,
) -> async_graphql::Result<Option<i64>> {
    match filter.get(name) {
        Some(v) if !v.is_null() => Ok(Some(v.i64()?)),
        _ => Ok(None),
    }
}

fn opt_string(
    filter: &async_graphql::dynamic::ObjectAccessor<'_>,
    name: &str,
) -> async_graphql::Result<Option<String>> {
    match filter.get(name) {
        Some(v) if !v.is_null() => Ok(Some(v.string()?.to_string())),
        _ => Ok(None),
    }
}

fn date(
    filter: &async_graphql::dynamic::ObjectAccessor<'_>,
    name: &str,
) -> async_graphql::Result<i64> {
    let v =
        opt_string(filter, name)?.ok_or_else(|| async_graphql::Error::new(MISSING_DATES_ERROR))?;
    parse_iso(&v).ok_or_else(|| {
        async_graphql::Error::new(format!(
            "invalid DateTime for {name}: {v:?} (ISO-8601 expected)"
        ))
    })
}

fn root_field(root: &'static str, source: Source, connection: String) -> Field {
    Field::new(
        root,
        TypeRef::named_nn(connection),
        move |ctx: ResolverContext<'_>| {
            FieldFuture::new(async move {
                let rc = ctx.data::<RequestCtx>()?.clone();
                let filter = match ctx.args.get("filter") {
                    Some(f) if !f.is_null() => f.object()?,
                    _ => return Err(async_graphql::Error::new(MISSING_DATES_ERROR)),
                };
                let from = date(&filter, "startDate")?;
                let to = date(&filter, "endDate")?;
                let f = Filter {
                    queue_id: opt_i64(&filter, "queueId")?,
                    queue_account_id: opt_i64(&filter, "queueAccountId")?,
                    queue_name: opt_string(&filter, "queueName")?,
                    ivr_id: opt_i64(&filter, "ivrId")?,
                    ivr_account_id: opt_i64(&filter, "ivrAccountId")?,
                    ivr_name: opt_string(&filter, "ivrName")?,
                    agent_id: opt_i64(&filter, "agentId")?,
                    agent_account_id: opt_i64(&filter, "agentAccountId")?,
                    agent_name: opt_string(&filter, "agentName")?,
                    call_id: opt_string(&filter, "callId")?,
                };
                let first = ctx.args.try_get("first")?.i64()?;
                if first < 0 {
                    return Err(async_graphql::Error::new("first must not be negative"));
                }
                let first = first.min(MAX_FIRST) as usize;
                let after = match ctx.args.get("after") {
                    Some(a) if !a.is_null() => Some(
                        RecordKey::from_cursor(a.string()?)
                            .ok_or_else(|| async_graphql::Error::new("invalid cursor"))?,
                    ),
                    _ => None,
                };
                let page = tokio::task::spawn_blocking(move || {
                    let total = count(&rc.world, &rc.counts, rc.tenant, source, from, to, rc.now);
                    let (recs, has_next) = page(
                        &rc.world,
                        rc.tenant,
                        source,
                        from,
                        to,
                        rc.now,
                        after,
                        first,
                        &|v| f.matches(v),
                    );
                    Page {
                        cursor: recs.last().map(|r| r.key.to_cursor()),
                        records: recs
                            .iter()
                            .filter_map(|r| historic_record(source, &r.full))
                            .collect(),
                        total,
                        has_next,
                    }
                })
                .await
                .map_err(|e| async_graphql::Error::new(format!("internal error: {e}")))?;
                Ok(Some(FieldValue::owned_any(page)))
            })
        },
    )
    .argument(InputValue::new("filter", TypeRef::named("OverviewFilter")))
    .argument(InputValue::new("first", TypeRef::named_nn(TypeRef::INT)))
    .argument(InputValue::new("after", TypeRef::named(TypeRef::STRING)))
}

fn connection_type(connection: &str, record: &str) -> Object {
    fn page<'a>(ctx: &ResolverContext<'a>) -> Option<&'a Page> {
        ctx.parent_value.downcast_ref::<Page>()
    }
    Object::new(connection)
        .field(Field::new(
            "data",
            TypeRef::named_nn_list_nn(record),
            |ctx| {
                FieldFuture::Value(page(&ctx).map(|p| {
                    FieldValue::list(p.records.iter().map(|x| FieldValue::borrowed_any(x)))
                }))
            },
        ))
        .field(Field::new(
            "totalCount",
            TypeRef::named_nn(TypeRef::INT),
            |ctx| FieldFuture::Value(page(&ctx).map(|p| FieldValue::value(p.total))),
        ))
        .field(Field::new(
            "cursor",
            TypeRef::named(TypeRef::STRING),
            |ctx| {
                FieldFuture::Value(
                    page(&ctx)
                        .and_then(|p| p.cursor.clone())
                        .map(FieldValue::value),
                )
            },
        ))
        .field(Field::new(
            "hasNextPage",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            |ctx| FieldFuture::Value(page(&ctx).map(|p| FieldValue::value(p.has_next))),
        ))
}

impl Historic {
    pub fn new() -> Result<Historic, async_graphql::dynamic::SchemaError> {
        let mut builder = Schema::build("Query", None, None);
        builder = builder.register(
            Scalar::new("DateTime")
                .description("ISO-8601 UTC date-time, e.g. 2025-10-01T00:00:00.000Z")
                .validator(|v| matches!(v, GqlValue::String(s) if parse_iso(s.as_str()).is_some())),
        );
        let mut filter = InputObject::new("OverviewFilter");
        for (name, ty) in [
            ("startDate", "DateTime"),
            ("endDate", "DateTime"),
            ("queueId", TypeRef::INT),
            ("queueAccountId", TypeRef::INT),
            ("queueName", TypeRef::STRING),
            ("ivrId", TypeRef::INT),
            ("ivrAccountId", TypeRef::INT),
            ("ivrName", TypeRef::STRING),
            ("agentId", TypeRef::INT),
            ("agentAccountId", TypeRef::INT),
            ("agentName", TypeRef::STRING),
            ("callId", TypeRef::STRING),
        ] {
            filter = filter.field(InputValue::new(name, TypeRef::named(ty)));
        }
        builder = builder.register(filter);
        let mut query = Object::new("Query");
        for (root, source, prefix) in ROOTS {
            let record = format!("{prefix}Record");
            let connection = format!("{prefix}Connection");
            let mut types = Vec::new();
            if let Some(spec) = &SPECS.historic[source.index()] {
                object_types(&record, spec, &mut types);
            }
            for t in types {
                builder = builder.register(t);
            }
            builder = builder.register(connection_type(&connection, &record));
            query = query.field(root_field(root, source, connection));
        }
        let schema = builder.register(query).finish()?;
        Ok(Historic {
            schema,
            counts: Arc::new(CountCache::default()),
        })
    }

    /// The schema in SDL (for docs and tests).
    pub fn sdl(&self) -> String {
        self.schema.sdl()
    }
}

/// `POST /graphql`.
pub(crate) async fn handle(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let c = &state.counters;
    bump(&c.graphql_requests);
    let Some(tenant) = state.tenant_of(&headers) else {
        bump(&c.graphql_unauthorized);
        return plain(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    let (p429, p5xx) = (state.args.graphql_429_share, state.args.graphql_5xx_share);
    if p429 > 0.0 || p5xx > 0.0 {
        let (u, pick) = state.graphql_dice.roll();
        if u < p429 {
            bump(&c.graphql_429);
            let mut r = plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        if u < p429 + p5xx {
            bump(&c.graphql_5xx);
            let status = [
                StatusCode::INTERNAL_SERVER_ERROR,
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
            ][(pick % 3) as usize];
            return plain(status, "simulated upstream failure");
        }
    }
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("request body is not a GraphQL JSON request: {e}"),
            )
                .into_response()
        }
    };
    let ctx = RequestCtx {
        world: state.world.clone(),
        counts: state.graphql.counts.clone(),
        tenant,
        now: state.clock.now_ms(),
    };
    let response = state.graphql.schema.execute(request.data(ctx)).await;
    Json(response).into_response()
}
