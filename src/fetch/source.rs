//! What FetchDisk is asked to fetch: the URL (with its scheme guessed when missing), the
//! credentials, and the expected checksum.
//!
//! A URL's user info and its query string (where pre-signed URLs carry their signature) are
//! secrets: they are split off into [`Credentials`], sealed with the job, and put back only
//! for the request itself. Everything that shows a URL (job names and parameters, logs,
//! errors) shows it without them ([`display_url`]).

use serde::{Deserialize, Serialize};
use url::Url;

use crate::fetch::error::{FetchError, FetchResult};

/// A source's user name, password and query string: what FetchDisk keeps sealed for its
/// job, apart from the URL.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<String>,
    /// The URL's query string, without its `?` (sealed secrets of older versions have none).
    #[serde(default)]
    pub query: Option<String>,
}

/// A URL to fetch and the credentials for it. `url` never holds user info nor a query:
/// credentials given in the URL are moved to `user`/`password` (explicit arguments win over
/// them), its query to `query`.
#[derive(Clone, PartialEq, Eq)]
pub struct FetchSource {
    pub url: Url,
    pub user: Option<String>,
    pub password: Option<String>,
    pub query: Option<String>,
}

impl std::fmt::Debug for FetchSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("FetchSource")
            .field("url", &self.url.as_str())
            .field("user", &redacted(&self.user))
            .field("password", &redacted(&self.password))
            .field("query", &redacted(&self.query))
            .finish()
    }
}

/// A URL as it may be shown (in job names, logs, errors): without user info, query string
/// and fragment.
pub fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

pub const SCHEMES: &[&str] = &["http", "https", "ftp", "ftps"];

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl FetchSource {
    pub fn parse(raw: &str, user: Option<&str>, password: Option<&str>) -> FetchResult<Self> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(FetchError::invalid("url", "must not be empty"));
        }
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else {
            // No scheme: guess from the host name, as the platform always has.
            let host = raw
                .split(['/', ':', '@'])
                .find(|s| !s.is_empty())
                .unwrap_or("");
            let host = raw
                .rsplit_once('@')
                .map(|(_, rest)| rest.split(['/', ':']).next().unwrap_or(""))
                .unwrap_or(host);
            let scheme = if host.to_ascii_lowercase().starts_with("ftp.") {
                "ftp"
            } else {
                "http"
            };
            format!("{scheme}://{raw}")
        };
        let mut url = Url::parse(&with_scheme)
            .map_err(|e| FetchError::invalid("url", format!("is not a valid URL: {e}")))?;
        if !SCHEMES.contains(&url.scheme()) {
            return Err(FetchError::FetchRefused(format!(
                "the URL scheme '{}' is not supported; use http, https, ftp or ftps",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(FetchError::invalid("url", "has no host"));
        }
        let url_user = (!url.username().is_empty()).then(|| percent_decode(url.username()));
        let url_password = url.password().map(percent_decode);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_fragment(None);
        let query = url.query().map(str::to_string);
        url.set_query(None);
        let nonempty = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_string);
        let user = nonempty(user).or(url_user);
        let password = nonempty(password).or(url_password);
        Ok(FetchSource {
            url,
            user,
            password,
            query,
        })
    }

    /// The URL without credentials and query, for job records, logs and errors.
    pub fn redacted(&self) -> String {
        display_url(&self.url)
    }

    /// The URL to request: with its query string.
    pub fn request_url(&self) -> Url {
        let mut url = self.url.clone();
        url.set_query(self.query.as_deref());
        url
    }

    /// The secrets to seal, if there are any.
    pub fn credentials(&self) -> Option<Credentials> {
        (self.user.is_some() || self.password.is_some() || self.query.is_some()).then(|| {
            Credentials {
                user: self.user.clone(),
                password: self.password.clone(),
                query: self.query.clone(),
            }
        })
    }

    /// The source of a URL without user info (one [`Self::parse`] made) and its credentials.
    /// A job queued by an older version kept its query in the URL, which still works.
    pub fn with_credentials(mut url: Url, credentials: Option<Credentials>) -> Self {
        let Credentials {
            user,
            password,
            query,
        } = credentials.unwrap_or(Credentials {
            user: None,
            password: None,
            query: None,
        });
        let query = query.or_else(|| url.query().map(str::to_string));
        url.set_query(None);
        FetchSource {
            url,
            user,
            password,
            query,
        }
    }
}

/// A checksum algorithm FetchDisk checks the fetched image with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    const ALL: [Algorithm; 4] = [
        Algorithm::Md5,
        Algorithm::Sha1,
        Algorithm::Sha256,
        Algorithm::Sha512,
    ];

    /// The name in `<name>:<hex>` and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Hex digits of a digest.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha1 => 40,
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// The algorithm a name written before the digest means: `md5`, `sha1`, `sha256`,
    /// `sha512`, with or without a hyphen (`SHA-256`), in any case.
    fn named(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase().replace('-', "");
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The algorithm of a bare hex digest of `len` digits.
    fn of_length(len: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.hex_len() == len)
    }
}

/// The checksum FetchDisk checks the image against: over the file as fetched, after
/// decompression and before any conversion (as `md5sum` of the uncompressed file prints it).
/// In job parameters it is kept as [`Checksum::to_param`] writes it (`<algorithm>:<hex>` or
/// null).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Option<String>", try_from = "Option<String>")]
pub enum Checksum {
    None,
    /// The algorithm and the lower-case hex digest.
    Digest(Algorithm, String),
}

const CHECKSUM_FORMS: &str = "must be a hex digest (32 digits MD5, 40 SHA-1, 64 SHA-256, 128 \
     SHA-512), optionally written <algorithm>:<hex> (md5, sha1, sha256, sha512) or \
     {<ALGORITHM>}<hex> ({MD5}, {SHA-1}, {SHA-256}, {SHA-512})";

impl Checksum {
    /// Reads a checksum as users write them: bare hex recognised by its length (an
    /// `md5sum`/`sha256sum` line is taken too: `<hex>  <file>`), `sha256:<hex>` (Proxmox,
    /// Glance) or `{SHA-256}<hex>` (CloudStack); case-insensitive. Anything else is
    /// `INVALID_ARGUMENT`.
    pub fn parse(raw: Option<&str>) -> FetchResult<Self> {
        let raw = match raw.map(str::trim) {
            None | Some("") => return Ok(Checksum::None),
            Some(raw) => raw,
        };
        let invalid = || FetchError::invalid("checksum", CHECKSUM_FORMS);
        // Accept a pasted `md5sum` line: "<hex>  <file>".
        let raw = raw.split_whitespace().next().unwrap_or(raw);
        let (named, hex) = if let Some(rest) = raw.strip_prefix('{') {
            let (name, hex) = rest.split_once('}').ok_or_else(invalid)?;
            (Some(Algorithm::named(name).ok_or_else(invalid)?), hex)
        } else if let Some((name, hex)) = raw.split_once(':') {
            (Some(Algorithm::named(name).ok_or_else(invalid)?), hex)
        } else {
            (None, raw)
        };
        let hex = hex.to_ascii_lowercase();
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let algorithm = match named {
            Some(a) if a.hex_len() == hex.len() => a,
            Some(a) => {
                return Err(FetchError::invalid(
                    "checksum",
                    format!(
                        "is {} hex digits; a {} digest has {}",
                        hex.len(),
                        a.name(),
                        a.hex_len()
                    ),
                ));
            }
            None => Algorithm::of_length(hex.len()).ok_or_else(invalid)?,
        };
        Ok(Checksum::Digest(algorithm, hex))
    }

    /// The form kept in job parameters.
    pub fn to_param(&self) -> Option<String> {
        match self {
            Checksum::None => None,
            Checksum::Digest(algorithm, hex) => Some(format!("{}:{hex}", algorithm.name())),
        }
    }
}

impl From<Checksum> for Option<String> {
    fn from(checksum: Checksum) -> Self {
        checksum.to_param()
    }
}

impl TryFrom<Option<String>> for Checksum {
    type Error = String;

    fn try_from(param: Option<String>) -> Result<Self, String> {
        Checksum::parse(param.as_deref()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_guessed_and_credentials_moved_out_of_the_url() {
        let s = FetchSource::parse("ftp.example.com/pub/a.img", None, None).unwrap();
        assert_eq!(s.url.as_str(), "ftp://ftp.example.com/pub/a.img");
        let s = FetchSource::parse("images.example.com/a.img", None, None).unwrap();
        assert_eq!(s.url.scheme(), "http");
        let s = FetchSource::parse("http://bob:s%40cret@h/a.img", None, None).unwrap();
        assert_eq!(s.redacted(), "http://h/a.img");
        assert_eq!(s.user.as_deref(), Some("bob"));
        assert_eq!(s.password.as_deref(), Some("s@cret"));
        let s = FetchSource::parse("http://bob:x@h/a", Some("alice"), Some("pw")).unwrap();
        assert_eq!(
            (s.user.as_deref(), s.password.as_deref()),
            (Some("alice"), Some("pw"))
        );
        assert!(!format!("{s:?}").contains("pw"));
    }

    #[test]
    fn a_query_string_is_a_secret_put_back_only_for_the_request() {
        let raw = "http://u:p@h:8000/img.raw?X-Amz-Signature=secret123&token=abc#frag";
        let s = FetchSource::parse(raw, None, None).unwrap();
        assert_eq!(s.url.as_str(), "http://h:8000/img.raw");
        assert_eq!(s.redacted(), "http://h:8000/img.raw");
        assert!(!format!("{s:?}").contains("secret123"));
        assert_eq!(
            s.request_url().as_str(),
            "http://h:8000/img.raw?X-Amz-Signature=secret123&token=abc"
        );
        let sealed = s.credentials().unwrap();
        assert_eq!(
            sealed.query.as_deref(),
            Some("X-Amz-Signature=secret123&token=abc")
        );
        let again = FetchSource::with_credentials(s.url.clone(), Some(sealed));
        assert_eq!(again, s);
        // Only a query is secret enough to seal.
        let q = FetchSource::parse("http://h/a?x=1", None, None).unwrap();
        assert!(q.credentials().is_some());
        assert!(
            FetchSource::parse("http://h/a", None, None)
                .unwrap()
                .credentials()
                .is_none()
        );
        // A job of an older version kept the query in its URL, and no query sealed.
        let old = Url::parse("http://h/a?sig=1").unwrap();
        let old = FetchSource::with_credentials(old, None);
        assert_eq!(old.request_url().as_str(), "http://h/a?sig=1");
        assert_eq!(old.redacted(), "http://h/a");
        assert_eq!(
            display_url(&Url::parse("https://a:b@h/p?q=1#f").unwrap()),
            "https://h/p"
        );
    }

    #[test]
    fn other_schemes_are_refused() {
        for url in ["file:///etc/passwd", "gopher://h/", "javascript://x"] {
            let err = FetchSource::parse(url, None, None).unwrap_err();
            assert_eq!(err.code(), "FETCH_REFUSED", "{url}");
        }
        assert_eq!(
            FetchSource::parse("", None, None).unwrap_err().code(),
            "INVALID_ARGUMENT"
        );
    }

    #[test]
    fn checksums() {
        assert_eq!(Checksum::parse(None).unwrap(), Checksum::None);
        assert_eq!(Checksum::parse(Some("")).unwrap(), Checksum::None);
        let md5 = "D41D8CD98F00B204E9800998ECF8427E";
        let lower = md5.to_ascii_lowercase();
        assert_eq!(
            Checksum::parse(Some(md5)).unwrap(),
            Checksum::Digest(Algorithm::Md5, lower.clone())
        );
        assert_eq!(
            Checksum::parse(Some(&format!("{md5}  disk.img"))).unwrap(),
            Checksum::Digest(Algorithm::Md5, lower.clone())
        );
        for (algorithm, len) in [
            (Algorithm::Md5, 32),
            (Algorithm::Sha1, 40),
            (Algorithm::Sha256, 64),
            (Algorithm::Sha512, 128),
        ] {
            let hex = "Ab".repeat(len / 2);
            let want = Checksum::Digest(algorithm, hex.to_ascii_lowercase());
            let name = algorithm.name();
            let braced = match algorithm {
                Algorithm::Md5 => "MD5".to_string(),
                _ => format!("SHA-{}", &name[3..]),
            };
            for written in [
                hex.clone(),
                format!("{name}:{hex}"),
                format!("{}:{hex}", name.to_ascii_uppercase()),
                format!("{{{braced}}}{hex}"),
                format!("{{{}}}{hex}", braced.to_ascii_lowercase()),
                format!("{{{}}}{hex}", braced.replace('-', "")),
            ] {
                assert_eq!(Checksum::parse(Some(&written)).unwrap(), want, "{written}");
                let param = want.to_param();
                assert_eq!(Checksum::parse(param.as_deref()).unwrap(), want);
            }
        }
        for bad in [
            "abc",
            &"a".repeat(33),
            &"g".repeat(32),
            &format!("sha256:{}", "a".repeat(32)),
            &format!("sha384:{}", "a".repeat(96)),
            &format!("{{SHA-256}}{}", "a".repeat(40)),
            &format!("{{SHA-256{}", "a".repeat(64)),
            "md5:",
            "{MD5}",
        ] {
            let err = Checksum::parse(Some(bad)).unwrap_err();
            assert_eq!(err.code(), "INVALID_ARGUMENT", "{bad}");
        }
    }
}
