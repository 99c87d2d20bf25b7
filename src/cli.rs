//! Reading the command line: clap's parser, with hints that name the fix where clap's own
//! would mislead (`serve --port 8080` is not a typo of `--port-forward-ports`).

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};

use crate::config::Cli;

/// Flags people reach for that this program spells otherwise, and what to use instead.
const INTENTS: &[(&str, &str)] = &[
    (
        "--port",
        "the port is part of --listen HOST:PORT, e.g. --listen 127.0.0.1:8080 (this machine \
         only) or --listen 0.0.0.0:8080 (every interface)",
    ),
    (
        "--host",
        "the address is part of --listen HOST:PORT, e.g. --listen 0.0.0.0:8080",
    ),
    (
        "--bind",
        "to choose the address and port, use --listen HOST:PORT, e.g. --listen 0.0.0.0:8080",
    ),
    (
        "--address",
        "to choose the address and port, use --listen HOST:PORT, e.g. --listen 0.0.0.0:8080",
    ),
    (
        "--database",
        "use --database-url postgres://USER@HOST/NAME (or sqlite://PATH); the default is \
         SQLite in --data-dir",
    ),
    (
        "--db",
        "use --database-url postgres://USER@HOST/NAME (or sqlite://PATH); the default is \
         SQLite in --data-dir",
    ),
];

/// The command line, or an exit with clap's message (and status 2) when it is wrong.
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => with_hints(err).exit(),
    }
}

/// clap's error, with its suggestion dropped when it is not close to what was typed, and a
/// hint added for a flag from [`INTENTS`].
pub fn with_hints(err: clap::Error) -> clap::Error {
    if err.kind() != ErrorKind::UnknownArgument {
        return err;
    }
    let Some(ContextValue::String(given)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let flag = given.split('=').next().unwrap_or(given);
    let suggested = match err.get(ContextKind::SuggestedArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let close = suggested.clone().filter(|s| is_close(flag, s));
    let intent = INTENTS
        .iter()
        .find(|(f, _)| *f == flag)
        .map(|(_, tip)| *tip);
    if intent.is_none() && close == suggested {
        return err;
    }
    let mut better = clap::Error::new(ErrorKind::UnknownArgument).with_cmd(&Cli::command());
    better.insert(ContextKind::InvalidArg, ContextValue::String(given.clone()));
    if let Some(s) = &close {
        better.insert(ContextKind::SuggestedArg, ContextValue::String(s.clone()));
    }
    if let Some(tip) = intent {
        better.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![tip.into()]),
        );
    }
    // clap's usage line shows the flag it suggested: keep it only with that suggestion.
    if let (Some(_), Some(usage)) = (&close, err.get(ContextKind::Usage)) {
        better.insert(ContextKind::Usage, usage.clone());
    }
    better
}

/// Whether `suggestion` is plausibly what was meant by `typed`: a few letters apart, not a
/// longer flag that merely starts the same way.
fn is_close(typed: &str, suggestion: &str) -> bool {
    let typed = typed.trim_start_matches('-');
    let suggestion = suggestion.trim_start_matches('-');
    let allowed = (typed.chars().count() / 4).clamp(1, 3);
    strsim::damerau_levenshtein(typed, suggestion) <= allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(args: &[&str]) -> String {
        let err = Cli::try_parse_from(args).unwrap_err();
        with_hints(err).to_string()
    }

    #[test]
    fn port_is_answered_with_listen_not_port_forward_ports() {
        let text = message(&["extility", "serve", "--port", "8080"]);
        assert!(text.contains("--listen"), "{text}");
        assert!(!text.contains("--port-forward-ports"), "{text}");
    }

    #[test]
    fn close_typos_keep_their_suggestion() {
        let text = message(&["extility", "serve", "--data-dri", "x"]);
        assert!(text.contains("--data-dir"), "{text}");
        let text = message(&["extility", "serve", "--workrs", "2"]);
        assert!(text.contains("--workers"), "{text}");
    }

    #[test]
    fn closeness_is_a_few_letters() {
        assert!(is_close("--listn", "--listen"));
        assert!(is_close("--data-dri", "--data-dir"));
        assert!(!is_close("--port", "--port-forward-ports"));
        assert!(!is_close("--net", "--network"));
    }
}
