//! The table of API operations.
//!
//! [`operations!`] turns one declaration per operation into: a struct of its arguments (in
//! `ops::args`), a type-erased entry point that decodes those arguments from a JSON-shaped map,
//! calls the operation's function and encodes its result, and an [`Operation`] entry describing
//! it (argument names, order and wire types) for the SOAP codec, the WSDL and OpenAPI.
//!
//! Each row starts with `read` or `write`: whether the operation changes something. The entry
//! point of a `write` operation leaves one row in the audit trail (`super::audit`) once the
//! operation has returned, whatever its outcome; a `read` one leaves none. The marker changes
//! nothing in the WSDL or the OpenAPI document.

use std::collections::HashMap;
use std::sync::LazyLock;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::Ctx;
use super::wire::WireType;
use crate::error::ApiResult;

pub type CallFn = for<'a> fn(&'a Ctx, Map<String, Value>) -> BoxFuture<'a, ApiResult<Value>>;

#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub ty: WireType,
    pub optional: bool,
}

pub struct Operation {
    pub name: &'static str,
    pub doc: &'static str,
    pub params: &'static [Param],
    /// The name of the result part (`job_id`, `disk`, ...): the SOAP return element and the
    /// JSON field a scalar result is wrapped in.
    pub result_name: &'static str,
    pub result: WireType,
    /// Whether the operation changes something (`write` in the table): its calls are audited.
    pub mutates: bool,
    pub call: CallFn,
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operation")
            .field("name", &self.name)
            .finish()
    }
}

/// `read` or `write`, the first word of a row of [`operations!`], as a flag: does it change
/// something? Any other word does not compile.
macro_rules! mutates {
    (read) => {
        false
    };
    (write) => {
        true
    };
}
pub(crate) use mutates;

macro_rules! operations {
    ($(
        $(#[doc = $doc:literal])*
        $kind:ident $op:ident ( $($p:ident : $t:ty),* $(,)? ) -> $ret:ident : $rt:ty = $handler:path ;
    )*) => {
        /// The arguments of each API operation: one struct per operation, fields in wire order.
        pub mod args {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[doc = $doc])*
                #[derive(Debug, Clone)]
                pub struct $op { $(pub $p: $t),* }
            )*
        }

        mod calls {
            #[allow(unused_imports)]
            use super::*;
            use $crate::ops::wire::FromArg;
            $(
                #[allow(non_snake_case, unused_mut)]
                pub fn $op(
                    ctx: &$crate::ops::Ctx,
                    mut raw: serde_json::Map<String, serde_json::Value>,
                ) -> futures::future::BoxFuture<'_, $crate::error::ApiResult<serde_json::Value>> {
                    Box::pin(async move {
                        // The caller's place among its calls in flight, held until the call
                        // returns: refused here, the call does nothing (`ops::inflight`).
                        let _place = match $crate::ops::inflight::enter(ctx).await {
                            Ok(place) => place,
                            Err(err) => {
                                let refused = Err(err);
                                $crate::ops::registry::count_call(
                                    stringify!($op),
                                    ctx,
                                    &refused,
                                    std::time::Duration::ZERO,
                                );
                                return refused;
                            }
                        };
                        let started = std::time::Instant::now();
                        // The ids the arguments name, read before decoding takes them.
                        let audit = $crate::ops::registry::mutates!($kind).then(|| {
                            $crate::ops::audit::CallRecord::begin(
                                stringify!($op),
                                &[$($crate::ops::registry::wire_name(stringify!($p))),*],
                                &raw,
                            )
                        });
                        let outcome: $crate::error::ApiResult<serde_json::Value> = async {
                            let args = args::$op {
                                $($p: {
                                    let name = $crate::ops::registry::wire_name(stringify!($p));
                                    <$t as FromArg>::from_arg(name, raw.remove(name))?
                                }),*
                            };
                            if let Some(unknown) = raw.keys().next() {
                                return Err($crate::error::ApiError::invalid(
                                    unknown.clone(),
                                    concat!("is not an argument of ", stringify!($op)),
                                ));
                            }
                            let result: $rt = $handler(ctx, args).await?;
                            serde_json::to_value(result).map_err($crate::error::ApiError::internal)
                        }
                        .await;
                        if let Some(audit) = audit {
                            audit
                                .finish(
                                    ctx,
                                    stringify!($ret),
                                    &<$rt as $crate::ops::wire::Wire>::TYPE,
                                    &outcome,
                                )
                                .await;
                        }
                        $crate::ops::registry::count_call(
                            stringify!($op),
                            ctx,
                            &outcome,
                            started.elapsed(),
                        );
                        outcome
                    })
                }
            )*
        }

        /// Every API operation, in the order the WSDL lists them.
        pub static OPERATIONS: &[$crate::ops::registry::Operation] = &[$(
            $crate::ops::registry::Operation {
                name: stringify!($op),
                doc: concat!($($doc, "\n"),*),
                params: &[$(
                    $crate::ops::registry::Param {
                        name: $crate::ops::registry::wire_name(stringify!($p)),
                        ty: <$t as $crate::ops::wire::Wire>::TYPE,
                        optional: <$t as $crate::ops::wire::Wire>::NILLABLE,
                    }
                ),*],
                result_name: stringify!($ret),
                result: <$rt as $crate::ops::wire::Wire>::TYPE,
                mutates: $crate::ops::registry::mutates!($kind),
                call: calls::$op,
            }
        ),*];
    };
}
pub(crate) use operations;

/// The wire name of an argument: its Rust name without the `r#` of a raw identifier
/// (`ListProductOffers(type)` is declared with `r#type`).
pub const fn wire_name(rust_name: &'static str) -> &'static str {
    match rust_name.as_bytes() {
        [b'r', b'#', rest @ ..] => match std::str::from_utf8(rest) {
            Ok(name) => name,
            Err(_) => rust_name,
        },
        _ => rust_name,
    }
}

static BY_NAME: LazyLock<HashMap<String, &'static Operation>> = LazyLock::new(|| {
    super::OPERATIONS
        .iter()
        .map(|op| (op.name.to_ascii_lowercase(), op))
        .collect()
});

/// Finds an operation by name. Names are matched without regard to case, as PHP's SoapClient
/// does (`$client->fetchDisk(...)` calls `FetchDisk`).
pub fn find(name: &str) -> Option<&'static Operation> {
    BY_NAME.get(&name.to_ascii_lowercase()).copied()
}

/// Counts a call in this node's metrics: by operation, adapter and outcome, and its duration.
pub fn count_call<T>(
    operation: &'static str,
    ctx: &super::Ctx,
    outcome: &crate::error::ApiResult<T>,
    took: std::time::Duration,
) {
    let metrics = &crate::metrics::METRICS;
    let code = match outcome {
        Ok(_) => "OK",
        Err(err) => err.code(),
    };
    metrics
        .api_requests
        .with_label_values(&[operation, ctx.origin.via.as_str(), code])
        .inc();
    metrics
        .api_request_seconds
        .with_label_values(&[operation])
        .observe(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::super::OPERATIONS;

    /// Operations named like reads that change something: FCO's names, kept.
    const WRITES_NAMED_LIKE_READS: &[&str] = &["GetAuthenticationToken"];

    #[test]
    fn gets_lists_and_waits_read_everything_else_writes() {
        for op in OPERATIONS {
            let reads = ["Get", "List", "Wait"]
                .iter()
                .any(|prefix| op.name.starts_with(prefix))
                && !WRITES_NAMED_LIKE_READS.contains(&op.name);
            assert_eq!(
                op.mutates,
                !reads,
                "{} is marked {} in operations!",
                op.name,
                if op.mutates { "write" } else { "read" }
            );
        }
    }
}
