//! "Did you mean": the known name nearest to one that was mistyped, when it is near enough to
//! be a typo rather than another word.

/// The candidate nearest to `typed` (ignoring case and `_`), if a few letters at most separate
/// them: one for short names, up to three for long ones.
pub fn nearest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let simple = |s: &str| s.to_ascii_lowercase().replace('_', "");
    let typed_simple = simple(typed);
    let allowed = (typed_simple.chars().count() / 4).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&typed_simple, &simple(c)), c))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_name_and_other_words_find_nothing() {
        let names = ["disk_id", "server_id", "vdc_id", "ListVDCs", "ListDisks"];
        assert_eq!(nearest("diskid", names), Some("disk_id"));
        assert_eq!(nearest("disk_Id", names), Some("disk_id"));
        assert_eq!(nearest("ListVDC", names), Some("ListVDCs"));
        assert_eq!(nearest("listdisk", names), Some("ListDisks"));
        assert_eq!(nearest("colour", names), None);
        assert_eq!(nearest("id", names), None);
    }
}
