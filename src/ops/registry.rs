//! The table of API operations.
//!
//! [`operations!`] turns one declaration per operation into: a struct of its arguments (in
//! `ops::args`, with its parameter list and its decoding from a JSON-shaped map: [`Arguments`]),
//! a typed call (`ops::call::ListDisks(ctx, args) -> ApiResult<Vec<Disk>>`, what the panel
//! uses), a type-erased entry point (a JSON-shaped map in, the result as JSON out: what SOAP
//! and JSON use) that goes through the typed call, and an [`Operation`] entry describing it
//! (argument names, order and wire types) for the SOAP codec, the WSDL and OpenAPI. Every call,
//! typed or not, goes through one entry point, [`enter`].
//!
//! Each row starts with `read` or `write`: whether the operation changes something. The entry
//! point of a `write` operation leaves one row in the audit trail (`super::audit`), whatever
//! its outcome: written by the transaction that makes the change, as it commits, or once the
//! operation has returned when none did; a `read` one leaves none. The marker changes nothing
//! in the WSDL or the OpenAPI document.
//!
//! # API versions
//!
//! The SOAP contract is versioned ([`Version`]): version 1 is the API of the first release,
//! frozen; [`CURRENT`] has everything. A row, an argument or a field of a wire record
//! (`wire_struct!`) that appeared after version 1 says so with `#[since(N)]` in front of it;
//! without one it is in version 1. Each version's SOAP endpoint and WSDL show only what that
//! version has ([`Operation::in_version`], [`Operation::params_in`],
//! [`super::wire::StructType::fields_in`]); an argument a version lacks is "not given" to the
//! operation. JSON, the panel and OpenAPI are the current version. ARCHITECTURE.md has the
//! rule for changing the table, and `tests` below and `tests/it/interface_docs.rs` enforce it.
//!
//! # Result parts
//!
//! An operation answers with one part, its result (`-> disk: Disk`), and may answer with more
//! in a later version: `-> result: i64, #[since(2)] hygiene: HygieneReport`. Each version's
//! SOAP response carries the parts that version has, in order (version 1's stays as it was
//! released); JSON answers with an object of every part by name, which is what a scalar result
//! already was (`{"result": 1}`), so a JSON client of the first part reads on unchanged. That
//! is why only an operation whose first part is a scalar may have more. The typed call of
//! such an operation returns `results::X`, a struct with a field per part; its handler
//! returns that too.

use std::collections::HashMap;
use std::sync::LazyLock;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::Ctx;
use super::wire::WireType;
use crate::error::ApiResult;

/// An API version of the SOAP contract: 1, 2, ...
pub type Version = u32;

/// The version of everything in the table that says no other: the first release's API.
pub const FIRST: Version = 1;

/// The newest version: everything in the table. Every version before it is released: its
/// WSDL is checked in as `wsdl/extility-v{N}.wsdl` and never changes again. Releasing the
/// current version means checking in its WSDL and raising this (ARCHITECTURE.md).
pub const CURRENT: Version = 2;

/// Every version, oldest first.
pub fn versions() -> impl Iterator<Item = Version> {
    FIRST..=CURRENT
}

/// The released versions, which never change: every one before [`CURRENT`].
pub fn released() -> impl Iterator<Item = Version> {
    FIRST..CURRENT
}

/// `#[since(N)]` in the table as a number: N, or [`FIRST`] when there is none.
macro_rules! since {
    () => {
        $crate::ops::registry::FIRST
    };
    ($version:literal) => {
        $version
    };
}
pub(crate) use since;

/// A type-erased entry point: arguments as a JSON-shaped map, the result as JSON.
pub type CallFn = for<'a> fn(&'a Ctx, Map<String, Value>) -> BoxFuture<'a, ApiResult<Value>>;

/// A part of an operation's response after the first (see "Result parts" above).
#[derive(Debug, Clone, Copy)]
pub struct ResultPart {
    pub name: &'static str,
    pub ty: WireType,
    /// The API version the part appeared in; responses of versions before it lack it.
    pub since: Version,
}

#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub ty: WireType,
    pub optional: bool,
    /// The API version the argument appeared in; in versions before it, it is not given.
    pub since: Version,
}

pub struct Operation {
    pub name: &'static str,
    pub doc: &'static str,
    pub params: &'static [Param],
    /// The name of the result part (`job_id`, `disk`, ...): the SOAP return element and the
    /// JSON field a scalar result is wrapped in.
    pub result_name: &'static str,
    pub result: WireType,
    /// The parts of the response after `result`, oldest first: empty for most operations.
    /// With any, the first part is a scalar and the erased entry point returns an object of
    /// every part by name.
    pub extra_results: &'static [ResultPart],
    /// Whether the operation changes something (`write` in the table): its calls are audited.
    pub mutates: bool,
    /// The API version the operation appeared in.
    pub since: Version,
    pub call: CallFn,
}

impl Operation {
    /// Whether `version` of the API has this operation.
    pub fn in_version(&self, version: Version) -> bool {
        self.since <= version
    }

    /// The arguments `version` has, in wire order (a prefix of the current ones).
    pub fn params_in(&self, version: Version) -> impl Iterator<Item = &'static Param> + use<> {
        self.params.iter().filter(move |p| p.since <= version)
    }

    /// The parts of the response `version` has, in wire order: the result, then the extra
    /// parts of that version (a prefix of the current ones).
    pub fn results_in(&self, version: Version) -> impl Iterator<Item = ResultPart> + use<> {
        let first = ResultPart {
            name: self.result_name,
            ty: self.result,
            since: self.since,
        };
        let extra = self
            .extra_results
            .iter()
            .filter(move |p| p.since <= version);
        std::iter::once(first).chain(extra.copied())
    }

    /// What the erased entry point returned, split into the parts `version`'s response has:
    /// the value itself when the operation has one part, else each part's field of it.
    pub fn result_parts<'v>(
        &self,
        version: Version,
        value: &'v Value,
    ) -> Vec<(ResultPart, &'v Value)> {
        if self.extra_results.is_empty() {
            return self.results_in(version).map(|part| (part, value)).collect();
        }
        self.results_in(version)
            .map(|part| (part, value.get(part.name).unwrap_or(&Value::Null)))
            .collect()
    }
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
        $(#[since($since:literal)])?
        $kind:ident $op:ident (
            $( $(#[since($psince:literal)])? $p:ident : $t:ty ),* $(,)?
        ) -> $ret:ident : $rt:ty
        $(, $(#[since($xsince:literal)])? $xret:ident : $xrt:ty )*
        = $handler:path ;
    )*) => {
        /// The arguments of each API operation: one struct per operation, fields in wire order.
        /// `Default` leaves every optional argument out, so a call names only what it gives:
        /// `args::ListDisks { vdc_id, ..Default::default() }`.
        pub mod args {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[doc = $doc])*
                #[derive(Debug, Clone, Default, serde::Serialize)]
                pub struct $op { $(pub $p: $t),* }

                impl $crate::ops::registry::Arguments for $op {
                    const OPERATION: &'static str = stringify!($op);
                    const PARAMS: &'static [$crate::ops::registry::Param] = &[$(
                        $crate::ops::registry::Param {
                            name: $crate::ops::registry::wire_name(stringify!($p)),
                            ty: <$t as $crate::ops::wire::Wire>::TYPE,
                            optional: <$t as $crate::ops::wire::Wire>::NILLABLE,
                            since: $crate::ops::registry::since!($($psince)?),
                        }
                    ),*];

                    #[allow(unused_mut, unused_variables)]
                    fn decode(
                        mut raw: serde_json::Map<String, serde_json::Value>,
                    ) -> $crate::error::ApiResult<Self> {
                        #[allow(unused_imports)]
                        use $crate::ops::wire::FromArg;
                        $crate::ops::registry::check_argument_names(
                            stringify!($op),
                            &[$($crate::ops::registry::wire_name(stringify!($p))),*],
                            &raw,
                        )?;
                        Ok($op {
                            $($p: {
                                let name = $crate::ops::registry::wire_name(stringify!($p));
                                <$t as FromArg>::from_arg(name, raw.remove(name))?
                            }),*
                        })
                    }
                }
            )*
        }

        /// The results of the operations that answer with more than one part: one struct per
        /// such operation, a field per part in wire order (`results::PublishImage { result,
        /// hygiene }`). The others return their one part's type.
        pub mod results {
            #[allow(unused_imports)]
            use super::*;
            $(
                $crate::ops::registry::result_struct!($op $ret $rt ; $($xret $xrt),*);
            )*
        }

        /// Typed calls: one function per API operation, named like it, taking its arguments
        /// (`args::X`, or the raw fields of a form: [`registry::Input`]) and returning its
        /// result type. Each goes through [`registry::enter`], the entry point SOAP and JSON
        /// use too: the caller's place among its calls in flight, the audit trail of a `write`
        /// operation, the call's metrics.
        #[allow(non_snake_case)]
        pub mod call {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[doc = $doc])*
                pub async fn $op(
                    ctx: &$crate::ops::Ctx,
                    args: impl Into<$crate::ops::registry::Input<args::$op>>,
                ) -> $crate::error::ApiResult<
                    $crate::ops::registry::result_type!($($xret)* ; $op $rt)
                > {
                    $crate::ops::registry::enter(
                        ctx,
                        &$crate::ops::registry::Entry {
                            mutates: $crate::ops::registry::mutates!($kind),
                            result_name: stringify!($ret),
                            result: <$rt as $crate::ops::wire::Wire>::TYPE,
                            extra_results: &[$(stringify!($xret)),*],
                        },
                        args.into(),
                        |ctx, args| $handler(ctx, args),
                    )
                    .await
                }
            )*
        }

        /// The type-erased entry points: a JSON-shaped map of arguments in, the result as JSON
        /// out, through the typed call.
        #[allow(non_snake_case)]
        mod erased {
            $(
                pub fn $op(
                    ctx: &$crate::ops::Ctx,
                    raw: serde_json::Map<String, serde_json::Value>,
                ) -> futures::future::BoxFuture<'_, $crate::error::ApiResult<serde_json::Value>> {
                    Box::pin(async move {
                        let result = super::call::$op(ctx, $crate::ops::registry::Input::Raw(raw)).await?;
                        serde_json::to_value(result).map_err($crate::error::ApiError::internal)
                    })
                }
            )*
        }

        /// Every API operation, in the order the WSDL lists them.
        pub static OPERATIONS: &[$crate::ops::registry::Operation] = &[$(
            $crate::ops::registry::Operation {
                name: stringify!($op),
                doc: concat!($($doc, "\n"),*),
                params: <args::$op as $crate::ops::registry::Arguments>::PARAMS,
                result_name: stringify!($ret),
                result: <$rt as $crate::ops::wire::Wire>::TYPE,
                extra_results: &[$(
                    $crate::ops::registry::ResultPart {
                        name: stringify!($xret),
                        ty: <$xrt as $crate::ops::wire::Wire>::TYPE,
                        since: $crate::ops::registry::since!($($xsince)?),
                    }
                ),*],
                mutates: $crate::ops::registry::mutates!($kind),
                since: $crate::ops::registry::since!($($since)?),
                call: erased::$op,
            }
        ),*];
    };
}
pub(crate) use operations;

/// The struct of an operation's result parts (`results::X`), for an operation that has more
/// than one; nothing for the others.
macro_rules! result_struct {
    ($op:ident $ret:ident $rt:ty ;) => {};
    ($op:ident $ret:ident $rt:ty ; $($xret:ident $xrt:ty),+) => {
        #[doc = concat!("What ", stringify!($op), " answers: a field per part of its response.")]
        #[derive(Debug, Clone, serde::Serialize)]
        pub struct $op {
            pub $ret: $rt,
            $(pub $xret: $xrt),+
        }
    };
}
pub(crate) use result_struct;

/// The type a typed call returns: its one part's, or `results::X` for an operation with more.
macro_rules! result_type {
    (; $op:ident $rt:ty) => {
        $rt
    };
    ($($xret:ident)+ ; $op:ident $rt:ty) => {
        results::$op
    };
}
pub(crate) use result_type;

/// The arguments of one operation (`ops::args::X`): its name, its parameters, and decoding
/// them from a JSON-shaped map (what SOAP, JSON and the panel's forms give).
pub trait Arguments: Sized + serde::Serialize {
    const OPERATION: &'static str;
    const PARAMS: &'static [Param];
    /// Refuses an argument the operation does not have, then decodes each by its wire type.
    fn decode(raw: Map<String, Value>) -> ApiResult<Self>;
}

/// What a typed call is given: its arguments already typed, or raw ones (an adapter's map, a
/// form's fields) that the call decodes inside the entry point, so that a refused argument is
/// counted and audited like any other failure of the call.
#[derive(Debug, Clone)]
pub enum Input<A> {
    Typed(A),
    Raw(Map<String, Value>),
}

impl<A> From<A> for Input<A> {
    fn from(args: A) -> Self {
        Input::Typed(args)
    }
}

/// What the entry point needs to know of an operation besides its arguments' type (which
/// names it: [`Arguments::OPERATION`]).
pub struct Entry {
    pub mutates: bool,
    pub result_name: &'static str,
    pub result: WireType,
    /// The names of the parts after the first ([`Operation::extra_results`]).
    pub extra_results: &'static [&'static str],
}

/// The one entry point of every API call, whichever adapter makes it: takes the caller's
/// place among its calls in flight (refused there, the call does nothing: `ops::inflight`),
/// decodes raw arguments, runs the operation, leaves the audit trail's row of a `write`
/// operation and counts the call in the metrics.
pub async fn enter<'a, A, R, F, Fut>(
    ctx: &'a Ctx,
    entry: &Entry,
    input: Input<A>,
    handler: F,
) -> ApiResult<R>
where
    A: Arguments,
    R: serde::Serialize,
    F: FnOnce(&'a Ctx, A) -> Fut,
    Fut: std::future::Future<Output = ApiResult<R>> + 'a,
{
    let _place = match super::inflight::enter(ctx).await {
        Ok(place) => place,
        Err(err) => {
            let refused = Err(err);
            count_call(A::OPERATION, ctx, &refused, std::time::Duration::ZERO);
            return refused;
        }
    };
    let started = std::time::Instant::now();
    // The ids the arguments name, read before decoding takes them.
    let names: Vec<&'static str> = A::PARAMS.iter().map(|p| p.name).collect();
    let audit = entry.mutates.then(|| match &input {
        Input::Raw(raw) => super::audit::CallRecord::begin(A::OPERATION, &names, raw),
        Input::Typed(args) => match serde_json::to_value(args) {
            Ok(Value::Object(raw)) => super::audit::CallRecord::begin(A::OPERATION, &names, &raw),
            _ => super::audit::CallRecord::begin(A::OPERATION, &names, &Map::new()),
        },
    });
    let call = async {
        let args = match input {
            Input::Typed(args) => args,
            Input::Raw(raw) => A::decode(raw)?,
        };
        handler(ctx, args).await
    };
    // A `write` call's row is written by its transaction (`audit::CallRecord::run`).
    let (outcome, written) = match &audit {
        Some(audit) => audit.run(ctx, call).await,
        None => (super::audit::run_read(call).await, None),
    };
    // The database out of reach is said as such, whoever made the error.
    let mut outcome = outcome.map_err(crate::error::ApiError::classified);
    if let Some(audit) = audit {
        if entry.extra_results.is_empty() {
            audit
                .finish(ctx, entry.result_name, &entry.result, &outcome, written)
                .await;
        } else {
            // The audit trail reads the ids of the first part, as for any other operation.
            let first = outcome.map(|whole| FirstPart {
                whole,
                name: entry.result_name,
            });
            audit
                .finish(ctx, entry.result_name, &entry.result, &first, written)
                .await;
            outcome = first.map(|part| part.whole);
        }
    }
    count_call(A::OPERATION, ctx, &outcome, started.elapsed());
    outcome
}

/// A result of several parts ([`Operation::extra_results`]) that serializes as its first.
struct FirstPart<R> {
    whole: R,
    name: &'static str,
}

impl<R: serde::Serialize> serde::Serialize for FirstPart<R> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let whole = serde_json::to_value(&self.whole).map_err(serde::ser::Error::custom)?;
        whole
            .get(self.name)
            .unwrap_or(&Value::Null)
            .serialize(serializer)
    }
}

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

/// Finds an operation of the current version by name. Names are matched without regard to
/// case, as PHP's SoapClient does (`$client->fetchDisk(...)` calls `FetchDisk`).
pub fn find(name: &str) -> Option<&'static Operation> {
    BY_NAME.get(&name.to_ascii_lowercase()).copied()
}

/// Refuses an argument the operation does not have, before any is decoded (so that a
/// misspelt `diskid` is named as such, not reported as a missing `disk_id`), with the nearest
/// parameter name when one is close.
pub fn check_argument_names(
    operation: &str,
    params: &[&'static str],
    raw: &serde_json::Map<String, serde_json::Value>,
) -> crate::error::ApiResult<()> {
    let Some(unknown) = raw.keys().find(|k| !params.contains(&k.as_str())) else {
        return Ok(());
    };
    let hint = match super::suggest::nearest(unknown, params.iter().copied()) {
        Some(name) => format!(" (did you mean '{name}'?)"),
        None if params.is_empty() => " (it takes none)".to_string(),
        None => format!(" (its arguments: {})", params.join(", ")),
    };
    Err(crate::error::ApiError::invalid(
        unknown.clone(),
        format!("is not an argument of {operation}{hint}"),
    ))
}

/// Finds an operation by name, or says there is none and which name is nearest.
pub fn find_or_suggest(name: &str) -> crate::error::ApiResult<&'static Operation> {
    find(name).ok_or_else(|| unknown(name))
}

/// The error for an operation name no operation has, with the nearest name if one is close.
pub fn unknown(name: &str) -> crate::error::ApiError {
    crate::error::ApiError::UnknownOperation {
        name: name.to_string(),
        nearest: super::suggest::nearest(name, super::OPERATIONS.iter().map(|op| op.name)),
    }
}

/// The operations `version` of the API has, in table order.
pub fn operations_in(version: Version) -> impl Iterator<Item = &'static Operation> {
    super::OPERATIONS
        .iter()
        .filter(move |op| op.in_version(version))
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
    use super::super::wire::WireType;
    use super::{CURRENT, FIRST, Version};

    fn known(version: Version) -> bool {
        (FIRST..=CURRENT).contains(&version)
    }

    /// The rule for versions, as far as the table alone can tell (the WSDL files tell the
    /// rest: tests/it/interface_docs.rs): each version's arguments of an operation are a
    /// prefix of the next one's, so an older client's call means the same on every version;
    /// an argument newer than its operation can be left out; every version named exists.
    #[test]
    fn newer_arguments_come_last_and_may_be_left_out() {
        for op in OPERATIONS {
            assert!(known(op.since), "{} is since version {}", op.name, op.since);
            let mut previous = FIRST;
            for p in op.params {
                assert!(
                    known(p.since),
                    "{}({}) is since {}",
                    op.name,
                    p.name,
                    p.since
                );
                assert!(
                    p.since >= previous,
                    "{}({}) is since version {} but follows an argument of version {previous}: \
                     a newer argument goes after the older ones",
                    op.name,
                    p.name,
                    p.since
                );
                previous = p.since;
                assert!(
                    p.since <= op.since || p.optional,
                    "{}({}) came after its operation, so it must be an Option: clients of \
                     version {} do not send it",
                    op.name,
                    p.name,
                    op.since
                );
            }
        }
    }

    /// A response gains parts only at its end and only in a later version than its operation,
    /// so each version's response is a prefix of the next one's and version 1's stays as it
    /// was released; and only after a scalar, so that JSON, which answers with an object of
    /// the parts by name, only gains a key.
    #[test]
    fn newer_result_parts_come_last_after_a_scalar() {
        for op in OPERATIONS {
            let mut previous = op.since;
            for part in op.extra_results {
                assert!(
                    known(part.since),
                    "{} -> {} is since {}",
                    op.name,
                    part.name,
                    part.since
                );
                assert!(
                    part.since > op.since,
                    "{} -> {} is since version {}, not after its operation's {}: an operation \
                     answers with one part in the version it came in",
                    op.name,
                    part.name,
                    part.since,
                    op.since
                );
                assert!(
                    part.since >= previous,
                    "{} -> {} is since version {} but follows a part of version {previous}: \
                     a newer part goes after the older ones",
                    op.name,
                    part.name,
                    part.since
                );
                previous = part.since;
                assert!(
                    part.name != op.result_name
                        && op
                            .extra_results
                            .iter()
                            .filter(|p| p.name == part.name)
                            .count()
                            == 1,
                    "{} answers with two parts named {}",
                    op.name,
                    part.name
                );
            }
            if !op.extra_results.is_empty() {
                assert!(
                    !matches!(op.result, WireType::Struct(_) | WireType::Array(_)),
                    "{} answers with a record or a list, which JSON gives as it is: it cannot \
                     gain parts without changing its JSON answer",
                    op.name
                );
            }
        }
    }

    /// The parts of each version's response are read from the object a multi-part result
    /// serializes to; a one-part result is its own part.
    #[test]
    fn result_parts_split_what_the_operation_returned() {
        let publish = super::find("PublishImage").unwrap();
        let answer = serde_json::json!({"result": 1, "hygiene": {"status": "clean"}});
        let names = |version| -> Vec<(&str, serde_json::Value)> {
            publish
                .result_parts(version, &answer)
                .into_iter()
                .map(|(part, value)| (part.name, value.clone()))
                .collect()
        };
        assert_eq!(names(FIRST), [("result", serde_json::json!(1))]);
        assert_eq!(
            names(CURRENT),
            [
                ("result", serde_json::json!(1)),
                ("hygiene", serde_json::json!({"status": "clean"}))
            ]
        );
        let delete = super::find("DeleteImage").unwrap();
        let one = serde_json::json!(1);
        let parts = delete.result_parts(CURRENT, &one);
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].0.name, parts[0].1), ("result", &one));
    }

    #[test]
    fn every_field_is_of_a_known_version() {
        fn visit(ty: &WireType) {
            match ty {
                WireType::Struct(s) => {
                    for f in s.fields {
                        assert!(known(f.since), "{}.{} is since {}", s.name, f.name, f.since);
                        visit(&f.ty);
                    }
                }
                WireType::Array(item) => visit(item),
                _ => {}
            }
        }
        for op in OPERATIONS {
            op.params.iter().for_each(|p| visit(&p.ty));
            visit(&op.result);
            op.extra_results.iter().for_each(|p| visit(&p.ty));
        }
    }

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
