//! Paging and filters of the `List*` operations.
//!
//! Every list is read a page at a time by a keyset on its order: a page is at most
//! `page_size` items (1 to [`MAX_PAGE`], [`MAX_PAGE`] when omitted, so a customer with fewer
//! items gets them all, as before paging existed), and the next page starts after the last
//! item's id (`after_id`, for lists in ascending order) or below it (`before_id`, for the
//! newest-first lists: ListJobs and ListAuditEvents). A cursor is only ever compared with the
//! ids of the caller's own items, so another customer's id tells nothing: it is a number like
//! any other. The few lists ordered by something else than their id (ListPortForwards by
//! guest port, ListUsage by time) find where their cursor stands among the caller's own items;
//! an id that is not one of them is INVALID_ARGUMENT, the same for another customer's id as for
//! a missing one.
//!
//! The SQL of each list reads its page from an index holding the list's scope and then the id
//! (migration 0011), so that a first page costs the same however many items the customer has.
//!
//! Name filters ([`NameFilter`]) are a case-insensitive substring: `LOWER(name) LIKE
//! LOWER(pattern)` with `%`, `_` and `\` of the filter escaped, both sides folded by the same
//! function of the database (SQLite's `LOWER` folds ASCII letters only, PostgreSQL's those of
//! the database's locale).

use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::error::{ApiError, ApiResult};

/// The largest page, and the page when none is asked for.
pub const MAX_PAGE: i64 = 1000;

/// What a list's SQL binds: at most `limit` items after (or before) `cursor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    /// Ascending lists: items with an id above it (0 from the start). Descending lists: items
    /// with an id below it (`i64::MAX` from the newest).
    pub cursor: i64,
}

fn page_size(page_size: Option<i64>) -> ApiResult<i64> {
    let size = page_size.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&size) {
        return Err(ApiError::invalid(
            "page_size",
            format!("must be between 1 and {MAX_PAGE}, got {size}"),
        ));
    }
    Ok(size)
}

/// The page of a list in ascending order of id: `after_id` omitted (or nil, or -1) starts at
/// the beginning.
pub fn ascending(size: Option<i64>, after_id: Option<i64>) -> ApiResult<Page> {
    let limit = page_size(size)?;
    let cursor = match after_id {
        None => 0,
        Some(id) if id >= 0 => id,
        Some(id) => {
            return Err(ApiError::invalid(
                "after_id",
                format!(
                    "must be the id of the last item of the previous page (or omitted), got {id}"
                ),
            ));
        }
    };
    Ok(Page { limit, cursor })
}

/// The page of a list newest first: `before_id` omitted (or nil, or -1) starts at the newest.
pub fn descending(size: Option<i64>, before_id: Option<i64>) -> ApiResult<Page> {
    let limit = page_size(size)?;
    let cursor = match before_id {
        None => i64::MAX,
        Some(id) if id > 0 => id,
        Some(id) => {
            return Err(ApiError::invalid(
                "before_id",
                format!(
                    "must be the id of the last item of the previous page (or omitted), got {id}"
                ),
            ));
        }
    };
    Ok(Page { limit, cursor })
}

/// The cursor of a list not ordered by id names none of the caller's items of that list.
pub fn unknown_cursor(what: &str, id: i64) -> ApiError {
    ApiError::invalid(
        "after_id",
        format!(
            "{id} is not one of the {what} of this list; \
             pass the id of the last item of the previous page"
        ),
    )
}

/// The longest name filter: a name is at most this long (`validate::MAX_NAME_CHARS`).
const MAX_FILTER_CHARS: usize = super::validate::MAX_NAME_CHARS;

/// A name filter as SQL binds it: a `LIKE` pattern (escape character `\`) matching names that
/// contain the filter, which the SQL compares in lower case ([`name_condition`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameFilter(pub String);

impl NameFilter {
    /// The filter `argument` asks for: `None` when omitted, nil or empty (every name). Longer
    /// than a name can be, or with control characters, it is INVALID_ARGUMENT.
    pub fn parse(argument: &str, value: Option<&str>) -> ApiResult<Option<NameFilter>> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        if value.chars().count() > MAX_FILTER_CHARS {
            return Err(ApiError::invalid(
                argument,
                format!("must be at most {MAX_FILTER_CHARS} characters"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                argument,
                "must not contain control characters",
            ));
        }
        let mut pattern = String::with_capacity(value.len() + 2);
        pattern.push('%');
        for c in value.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        Ok(Some(NameFilter(pattern)))
    }
}

/// The SQL condition of a name filter on `column` (one of the crate's own column names, never
/// input), with the pattern bound as `$n`; nothing without a filter.
pub fn name_condition(filter: &Option<NameFilter>, column: &str, n: usize) -> String {
    match filter {
        Some(_) => format!(" AND LOWER({column}) LIKE LOWER(${n}) ESCAPE '\\'"),
        None => String::new(),
    }
}

/// One page of a customer's items in one of its VDCs (`Some`), or in all of them (`None`), in
/// id order: `select` is a list's `SELECT ... WHERE ` (the crate's own SQL, never input) of a
/// table with `vdc_id`, `customer_id` and `name` columns. Read from the `(vdc_id, id)` or the
/// `(customer_id, id)` index.
pub async fn in_vdc_or_all<R>(
    conn: &mut AnyConnection,
    select: &str,
    vdc_id: Option<i64>,
    customer_id: i64,
    page: Page,
    name: Option<NameFilter>,
) -> ApiResult<Vec<R>>
where
    R: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin,
{
    // The parameters: the VDC when there is one, then the customer, the cursor, the limit and
    // the name.
    let (scope, cursor) = match vdc_id {
        Some(_) => ("vdc_id = $1 AND customer_id = $2", 3),
        None => ("customer_id = $1", 2),
    };
    let sql = format!(
        "{select}{scope} AND id > ${cursor}{} ORDER BY id LIMIT ${}",
        name_condition(&name, "name", cursor + 2),
        cursor + 1
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    if let Some(vdc_id) = vdc_id {
        query = query.bind(vdc_id);
    }
    query = query.bind(customer_id).bind(page.cursor).bind(page.limit);
    if let Some(name) = name {
        query = query.bind(name.0);
    }
    Ok(query.fetch_all(conn).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_at_most_a_thousand_and_a_thousand_by_default() {
        assert_eq!(
            ascending(None, None).unwrap(),
            Page {
                limit: 1000,
                cursor: 0
            }
        );
        assert_eq!(ascending(Some(1), Some(7)).unwrap().limit, 1);
        assert_eq!(ascending(Some(1000), Some(0)).unwrap().cursor, 0);
        for bad in [0, 1001, -5, i64::MAX] {
            let err = ascending(Some(bad), None).unwrap_err();
            assert_eq!(err.code(), "INVALID_ARGUMENT", "{bad}");
            assert!(err.to_string().contains("page_size"), "{err}");
        }
        assert_eq!(
            ascending(None, Some(-2)).unwrap_err().code(),
            "INVALID_ARGUMENT"
        );
        assert_eq!(descending(None, None).unwrap().cursor, i64::MAX);
        assert_eq!(descending(Some(10), Some(42)).unwrap().cursor, 42);
        assert_eq!(
            descending(None, Some(0)).unwrap_err().code(),
            "INVALID_ARGUMENT"
        );
    }

    #[test]
    fn name_filters_escape_like_wildcards() {
        let parse = |v: &str| NameFilter::parse("name", Some(v)).unwrap().map(|f| f.0);
        assert_eq!(parse("Web"), Some("%Web%".to_string()));
        assert_eq!(parse("  "), None);
        assert_eq!(NameFilter::parse("name", None).unwrap(), None);
        assert_eq!(parse("50%_off\\"), Some("%50\\%\\_off\\\\%".to_string()));
        assert!(NameFilter::parse("name", Some(&"x".repeat(101))).is_err());
        assert!(NameFilter::parse("name", Some("a\u{7}")).is_err());
        let filter = NameFilter::parse("name", Some("x")).unwrap();
        assert_eq!(
            name_condition(&filter, "d.name", 4),
            " AND LOWER(d.name) LIKE LOWER($4) ESCAPE '\\'"
        );
        assert_eq!(name_condition(&None, "d.name", 4), "");
    }
}
