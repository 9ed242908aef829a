//! Checks each daemon runs from its own tests, so that its configuration stays complete:
//! every flag has an environment variable, the example config file names every flag and
//! parses, and required settings need no flag.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Arg, Parser};

/// The settings of a daemon's command: every argument but `--help`, `--version`.
pub fn settings(command: &clap::Command) -> impl Iterator<Item = &Arg> {
    command.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
}

/// The settings (by id) that lack a long flag name (the TOML key) or an environment
/// variable.
pub fn settings_without_env(command: &clap::Command) -> Vec<String> {
    settings(command)
        .filter(|a| a.get_long().is_none() || a.get_env().is_none())
        .map(|a| a.get_id().to_string())
        .collect()
}

/// Panics unless every setting of `command` has a long flag name and a `REPRISE_...`
/// environment variable.
pub fn assert_every_flag_has_env(command: &clap::Command) {
    let missing = settings_without_env(command);
    assert!(missing.is_empty(), "{}: settings without a long flag or an env variable: {missing:?}", command.get_name());
    let foreign: Vec<_> = settings(command)
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .filter(|e| !e.starts_with("REPRISE_"))
        .collect();
    assert!(foreign.is_empty(), "{}: env variables not named REPRISE_...: {foreign:?}", command.get_name());
}

/// Panics unless the example config file at `path` parses as `T` by itself, names every
/// setting of `T` (commented out or not) but `config`, and still parses with each
/// commented-out setting uncommented alone (and, for a member of a mutually exclusive
/// group such as capture's inputs, the other members commented out).
pub fn assert_example_config<T: Parser>(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let program = || vec![OsString::from(T::command().get_name().to_string())];
    if let Err(e) = crate::layered::try_parse_with_file_text::<T>(program(), path, &text) {
        panic!("{} does not parse: {e}", path.display());
    }
    let mut command = T::command();
    command.build();
    let known: BTreeSet<String> = settings(&command).filter_map(|a| a.get_long()).map(str::to_string).collect();
    let mut named = BTreeSet::new();
    for (number, line) in text.lines().enumerate() {
        let Some((key, commented)) = setting_line(line) else { continue };
        assert!(known.contains(&key), "{}:{}: unknown setting {key:?}", path.display(), number + 1);
        if commented {
            let rivals = exclusive_rivals(&command, &key);
            let uncommented = text
                .lines()
                .enumerate()
                .map(|(n, l)| match setting_line(l) {
                    _ if n == number => l.trim_start().trim_start_matches('#').trim_start().to_string(),
                    Some((other, false)) if rivals.contains(&other) => format!("# {l}"),
                    _ => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n");
            if let Err(e) = crate::layered::try_parse_with_file_text::<T>(program(), path, &uncommented) {
                panic!("{}:{}: uncommented, {line:?} does not parse: {e}", path.display(), number + 1);
            }
        }
        named.insert(key);
    }
    let missing: Vec<_> = known.iter().filter(|k| *k != "config" && !named.contains(*k)).collect();
    assert!(missing.is_empty(), "{} does not show the settings {missing:?}", path.display());
}

/// The long names of the settings that may not be given with `long` (the other members
/// of its mutually exclusive groups).
fn exclusive_rivals(command: &clap::Command, long: &str) -> BTreeSet<String> {
    let Some(id) = command.get_arguments().find(|a| a.get_long() == Some(long)).map(|a| a.get_id().clone()) else {
        return BTreeSet::new();
    };
    command
        .get_groups()
        .filter(|group| !clap::ArgGroup::clone(group).is_multiple() && group.get_args().any(|member| *member == id))
        .flat_map(|group| group.get_args())
        .filter(|member| **member != id)
        .filter_map(|member| command.get_arguments().find(|a| a.get_id() == member))
        .filter_map(|a| a.get_long())
        .map(str::to_string)
        .collect()
}

/// The setting a line of a TOML file names (as the long flag name), and whether it is
/// commented out: `key = value` or `# key = value`.
fn setting_line(line: &str) -> Option<(String, bool)> {
    let line = line.trim_start();
    let (rest, commented) = match line.strip_prefix('#') {
        Some(rest) => (rest.trim_start(), true),
        None => (line, false),
    };
    let (key, value) = rest.split_once('=')?;
    let key = key.trim_end();
    let is_key = key.starts_with(|c: char| c.is_ascii_lowercase())
        && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    (is_key && !value.trim().is_empty()).then(|| (key.replace('_', "-"), commented))
}

/// What a daemon binary did, run by [`run_binary`].
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `binary` with `args` and no environment but `env`, for at most `timeout` (then it
/// is killed and this panics): for tests of settings that come from the environment or a
/// config file, which must not leak into (or from) other tests.
pub fn run_binary(binary: &Path, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Run {
    let mut child = Command::new(binary)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait");
            panic!(
                "{} {args:?} still running after {timeout:?}; stderr: {}",
                binary.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("wait");
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Panics unless `run` failed after parsing its settings, with `expected` in its error:
/// how a test shows that required settings given by env or file alone were accepted
/// (the binary then fails opening a store URL chosen to be invalid).
pub fn assert_failed_after_parsing(run: &Run, expected: &str) {
    assert!(!run.success, "must fail: {run:?}");
    assert!(!run.stderr.contains("required arguments were not provided"), "settings not taken: {}", run.stderr);
    assert!(!run.stderr.contains("Usage:"), "a clap error, not a run error: {}", run.stderr);
    assert!(run.stderr.contains(expected), "stderr {:?} must mention {expected:?}", run.stderr);
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::CommandFactory;

    use super::*;

    #[derive(Parser, Debug)]
    #[command(name = "example")]
    struct Complete {
        /// Config file.
        #[arg(long, env = "REPRISE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "REPRISE_CATALOG")]
        catalog: String,
        #[arg(long, env = "REPRISE_EXAMPLE_PORT", default_value_t = 1)]
        port: u16,
        #[arg(long, env = "REPRISE_EXAMPLE_INTERFACE", group = "input")]
        interface: Option<String>,
        #[arg(long, env = "REPRISE_EXAMPLE_PCAP_FILE", group = "input")]
        pcap_file: Option<String>,
        #[command(flatten)]
        logging: crate::LogArgs,
    }

    #[derive(Parser, Debug)]
    struct Incomplete {
        #[arg(long, env = "REPRISE_CATALOG")]
        catalog: String,
        #[arg(long)]
        port: u16,
        #[arg(long, env = "PORT")]
        other_port: u16,
    }

    #[test]
    fn every_flag_has_env_is_checked() {
        assert_every_flag_has_env(&Complete::command());
        assert_eq!(settings_without_env(&Incomplete::command()), vec!["port"]);
        let foreign = std::panic::catch_unwind(|| assert_every_flag_has_env(&Incomplete::command()));
        assert!(foreign.is_err());
    }

    #[test]
    fn setting_lines_are_recognised() {
        assert_eq!(setting_line("catalog = \"x\""), Some(("catalog".into(), false)));
        assert_eq!(setting_line("# log_format = \"json\""), Some(("log-format".into(), true)));
        assert_eq!(setting_line("# A label, KEY=VALUE; repeatable."), None);
        assert_eq!(setting_line("# where = the answer is"), Some(("where".into(), true)));
        assert_eq!(setting_line("[table]"), None);
    }

    fn example(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn example_configs_are_checked() {
        const INPUTS: &str = "interface = \"lo\"\n# pcap-file = \"a.pcap\"\n";
        let (_dir, good) = example(&format!(
            "# The catalog.\ncatalog = \"x\"\n# The port.\n# port = 2\n# log-format = \"json\"\n{INPUTS}"
        ));
        assert_example_config::<Complete>(&good);
        for bad in [
            "catalog = \"x\"\n# port = 2\n",                                // log-format missing
            "# catalog = \"x\"\n# port = 2\n# log-format = \"json\"\n",     // the required one commented out
            "catalog = \"x\"\n# port = \"two\"\n# log-format = \"json\"\n", // a bad commented value
            "catalog = \"x\"\n# port = 2\n# log-format = \"json\"\n# colour = 1\n", // unknown
        ] {
            let (_dir, path) = example(&format!("{bad}{INPUTS}"));
            let result = std::panic::catch_unwind(|| assert_example_config::<Complete>(&path));
            assert!(result.is_err(), "{bad:?} must be refused");
        }
    }
}
