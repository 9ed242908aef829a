//! `ctl replay`'s request rules: what the workers change and leave out of each recorded
//! request, from flags and a `--replay-config` TOML file, checked before anything starts.

use std::path::{Path, PathBuf};

use clap::Args;
use reprise_proto::v1::RequestRules;
use reprise_rules::replay::ReplayRules;
use serde::Deserialize;

use crate::client::UsageError;

#[derive(Args, Debug, Clone, Default)]
pub struct RuleArgs {
    /// Set a header on every request, "Name: value", replacing the recorded one (a fresh
    /// token for the staging target, say); repeatable.
    #[arg(long = "set-header", value_name = "NAME: VALUE")]
    pub set_headers: Vec<String>,
    /// Remove a header from every request (Cookie, say); repeatable.
    #[arg(long = "remove-header", value_name = "NAME")]
    pub remove_headers: Vec<String>,
    /// Rewrite the path and query, "REGEX:REPLACEMENT" ($1 for a group, as in GoReplay);
    /// the first rule that matches applies; repeatable.
    #[arg(long = "rewrite-url", value_name = "REGEX:REPLACEMENT")]
    pub rewrite_urls: Vec<String>,
    /// Send only requests of this method; repeatable.
    #[arg(long = "method", value_name = "METHOD")]
    pub methods: Vec<String>,
    /// Send only requests whose recorded path and query match; repeatable.
    #[arg(long = "allow-url", value_name = "REGEX")]
    pub allow_urls: Vec<String>,
    /// Leave out requests whose recorded path and query match (wins over --allow-url);
    /// repeatable.
    #[arg(long = "deny-url", value_name = "REGEX")]
    pub deny_urls: Vec<String>,
    /// Send this share of the requests (0.1 = 10%): the same ones in every run.
    #[arg(long, value_name = "SHARE")]
    pub sample: Option<f64>,
    /// Send requests without the X-Reprise-Replay: <replay id> header that marks them.
    #[arg(long)]
    pub no_marker: bool,
    /// A TOML file of these rules, keyed as the flags (set-header = ["Name: value"],
    /// sample = 0.5, marker = false, ...); flags add to its lists and override the rest.
    #[arg(long, value_name = "FILE")]
    pub replay_config: Option<PathBuf>,
}

/// The `--replay-config` file: the flags' names, lists where a flag repeats.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RulesFile {
    #[serde(default)]
    set_header: Vec<String>,
    #[serde(default)]
    remove_header: Vec<String>,
    #[serde(default)]
    rewrite_url: Vec<String>,
    #[serde(default)]
    method: Vec<String>,
    #[serde(default)]
    allow_url: Vec<String>,
    #[serde(default)]
    deny_url: Vec<String>,
    sample: Option<f64>,
    marker: Option<bool>,
}

impl RuleArgs {
    /// The rules of the file and the flags, compiled once to refuse a bad one here.
    pub fn rules(&self) -> Result<RequestRules, UsageError> {
        let file = match &self.replay_config {
            Some(path) => read_file(path)?,
            None => RulesFile::default(),
        };
        let joined =
            |from_file: Vec<String>, flags: &[String]| from_file.into_iter().chain(flags.iter().cloned()).collect();
        let rules = RequestRules {
            methods: joined(file.method, &self.methods),
            allow_urls: joined(file.allow_url, &self.allow_urls),
            deny_urls: joined(file.deny_url, &self.deny_urls),
            sample: self.sample.or(file.sample),
            rewrite_urls: joined(file.rewrite_url, &self.rewrite_urls),
            set_headers: joined(file.set_header, &self.set_headers),
            remove_headers: joined(file.remove_header, &self.remove_headers),
            no_marker: self.no_marker || file.marker == Some(false),
        };
        ReplayRules::compile(&rules, "").map_err(|e| UsageError(e.to_string()))?;
        Ok(rules)
    }
}

fn read_file(path: &Path) -> Result<RulesFile, UsageError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| UsageError(format!("--replay-config {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let reason = e.message().to_string();
        let line = e.span().map(|span| text[..span.start].matches('\n').count() + 1);
        match line {
            Some(line) => UsageError(format!("--replay-config {} line {line}: {reason}", path.display())),
            None => UsageError(format!("--replay-config {}: {reason}", path.display())),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn flags_add_to_the_file_and_override_its_scalars() {
        let config =
            file("set-header = [\"Authorization: Bearer a\"]\nmethod = [\"GET\"]\nsample = 0.5\nmarker = false\n");
        let args = RuleArgs {
            methods: vec!["POST".into()],
            sample: Some(0.25),
            replay_config: Some(config.path().to_path_buf()),
            ..Default::default()
        };
        let rules = args.rules().unwrap();
        assert_eq!(rules.methods, ["GET", "POST"]);
        assert_eq!(rules.set_headers, ["Authorization: Bearer a"]);
        assert_eq!(rules.sample, Some(0.25));
        assert!(rules.no_marker);
        assert_eq!(RuleArgs::default().rules().unwrap(), RequestRules::default());
    }

    #[test]
    fn a_bad_file_or_rule_is_a_usage_error_naming_it() {
        let unknown = file("sample = 0.5\nset-headers = [\"a: b\"]\n");
        let args = RuleArgs { replay_config: Some(unknown.path().to_path_buf()), ..Default::default() };
        let error = args.rules().unwrap_err().0;
        assert!(error.contains("line 2") && error.contains("unknown field `set-headers`"), "{error}");
        let missing = RuleArgs { replay_config: Some("/nonexistent/rules.toml".into()), ..Default::default() };
        assert!(missing.rules().unwrap_err().0.starts_with("--replay-config /nonexistent/rules.toml: "));
        let bad_regex = RuleArgs { allow_urls: vec!["(".into()], ..Default::default() };
        assert_eq!(bad_regex.rules().unwrap_err().0, "bad --allow-url \"(\": unclosed group");
    }
}
