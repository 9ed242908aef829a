//! Layered configuration for every daemon: command-line flags win over environment
//! variables, which win over a TOML file named by `--config` (or its environment
//! variable), which wins over defaults. The file's keys are the long flag names, with `_`
//! or `-` (`listen = "0.0.0.0:7100"`, `label = ["zone=a"]`, `track-responses = true`), so
//! one reference (`--help`) documents all three layers.

use std::ffi::OsString;
use std::path::Path;
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command, Parser};

/// Parses `T` from this process's arguments, environment and config file; on bad input
/// prints one clear error (or the help) and exits, as clap does.
pub fn parse_layered<T: Parser>() -> T {
    parse_layered_from(std::env::args_os().collect())
}

/// [`parse_layered`] over explicit arguments (the first is the program name).
pub fn parse_layered_from<T: Parser>(args: Vec<OsString>) -> T {
    try_parse_layered_from(args).unwrap_or_else(|e| e.exit())
}

/// [`parse_layered_from`], returning the error (or the help, or the version) instead of
/// exiting.
pub fn try_parse_layered_from<T: Parser>(args: Vec<OsString>) -> Result<T, clap::Error> {
    let (command, given) = first_pass::<T>(&args)?;
    let config = given.try_get_raw("config").ok().flatten().and_then(|mut values| values.next());
    let Some(path) = config.map(PathBuf::from) else {
        return T::try_parse_from(args);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        command.clone().error(ErrorKind::Io, format!("cannot read the config file {}: {e}", path.display()))
    })?;
    parse_with_file(&command, &given, args, &path, &text)
}

/// [`try_parse_layered_from`] with the config file's text given (named `path` in errors),
/// for checks of example files.
pub(crate) fn try_parse_with_file_text<T: Parser>(
    args: Vec<OsString>,
    path: &Path,
    text: &str,
) -> Result<T, clap::Error> {
    let (command, given) = first_pass::<T>(&args)?;
    parse_with_file(&command, &given, args, path, text)
}

/// A first pass only finds the config file and which settings flags and environment
/// already give: a required setting may still come from the file, so errors are left to
/// the final parse (but `--help` and `--version` end here).
fn first_pass<T: Parser>(args: &[OsString]) -> Result<(Command, ArgMatches), clap::Error> {
    let mut command = T::command();
    command.build();
    let given = command.clone().ignore_errors(true).try_get_matches_from(args)?;
    Ok((command, given))
}

fn parse_with_file<T: Parser>(
    command: &Command,
    given: &ArgMatches,
    args: Vec<OsString>,
    path: &Path,
    text: &str,
) -> Result<T, clap::Error> {
    let from_file = file_arguments(command, given, path, text)?;
    // The file's settings go first: no trailing argument of the command line can swallow them.
    let mut rest = args.into_iter();
    let all: Vec<OsString> = rest.next().into_iter().chain(from_file.iter().cloned()).chain(rest).collect();
    T::try_parse_from(all).map_err(|e| with_file_tip(e, path, &from_file))
}

/// The config file's settings as command-line arguments, leaving out those that flags or
/// environment variables already give.
fn file_arguments(
    command: &Command,
    given: &ArgMatches,
    path: &Path,
    text: &str,
) -> Result<Vec<OsString>, clap::Error> {
    let shown = path.display();
    let table: toml::Table =
        toml::from_str(text).map_err(|e| command.clone().error(ErrorKind::ValueValidation, format!("{shown}: {e}")))?;
    let mut arguments = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(long.as_str())) else {
            return Err(command.clone().error(ErrorKind::UnknownArgument, format!("{shown}: unknown setting {key:?}")));
        };
        let id = arg.get_id();
        if id == "config" {
            return Err(command
                .clone()
                .error(ErrorKind::ArgumentConflict, format!("{shown}: a config file cannot name another")));
        }
        if given_outside_file(command, given, id) {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            toml::Value::Table(_) => {
                let message = format!("{shown}: {key:?} must be a value or a list of values, not a table");
                return Err(command.clone().error(ErrorKind::InvalidValue, message));
            }
            other => vec![other],
        };
        let takes_values = arg.get_action().takes_values();
        for value in values {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Boolean(true) if !takes_values => {
                    arguments.push(format!("--{long}").into());
                    continue;
                }
                toml::Value::Boolean(false) if !takes_values => continue,
                other => other.to_string(),
            };
            arguments.push(format!("--{long}={text}").into());
        }
    }
    Ok(arguments)
}

/// Whether a flag or an environment variable gives the setting `id`, or another one of
/// its mutually exclusive group: either way the file's value must give way.
fn given_outside_file(command: &Command, given: &ArgMatches, id: &clap::Id) -> bool {
    let outside = |id: &clap::Id| {
        matches!(given.value_source(id.as_str()), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
    };
    outside(id)
        || command
            .get_groups()
            .filter(|group| !clap::ArgGroup::clone(group).is_multiple() && group.get_args().any(|member| member == id))
            .flat_map(|group| group.get_args())
            .any(outside)
}

/// Points a parse error at the config file when the file gave the bad setting, or when a
/// setting is missing (the user may have expected it from the file).
fn with_file_tip(mut error: clap::Error, path: &Path, from_file: &[OsString]) -> clap::Error {
    let bad_arg = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split([' ', '=']).next().unwrap_or_default().to_string(),
        _ => String::new(),
    };
    let from_file = from_file.iter().any(|a| a.to_string_lossy().split('=').next() == Some(bad_arg.as_str()));
    let tip = if from_file {
        format!("{bad_arg} comes from the config file {}", path.display())
    } else if error.kind() == ErrorKind::MissingRequiredArgument {
        format!("settings also come from the config file {}", path.display())
    } else {
        return error;
    };
    let mut tips = match error.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(tips)) => tips.clone(),
        _ => Vec::new(),
    };
    tips.push(tip.into());
    error.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[arg(long, env = "REPRISE_PROCESS_TEST_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "REPRISE_PROCESS_TEST_CATALOG")]
        catalog: String,
        #[arg(long, env = "REPRISE_PROCESS_TEST_LISTEN", default_value = "127.0.0.1:1")]
        listen: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value_t = 12)]
        partitions: i32,
        #[arg(long, group = "input")]
        interface: Option<String>,
        #[arg(long, group = "input")]
        pcap_file: Option<String>,
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        std::iter::once("prog").chain(list.iter().copied()).map(OsString::from).collect()
    }

    fn config_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, text).unwrap();
        let path = file.to_str().unwrap().to_string();
        (dir, path)
    }

    fn error(list: &[&str]) -> String {
        try_parse_layered_from::<Cli>(args(list)).unwrap_err().to_string()
    }

    #[test]
    fn file_fills_what_flags_leave_unset() {
        let (_dir, config) = config_file(
            "catalog = \"file:///c\"\nlisten = \"0.0.0.0:9\"\nname = \"from-file\"\nlabel = [\"a=1\", \"b=2\"]\n\
             dry-run = true\npartitions = 3\n",
        );
        let cli: Cli = parse_layered_from(args(&["--config", &config]));
        assert_eq!(cli.catalog, "file:///c");
        assert_eq!(cli.listen, "0.0.0.0:9");
        assert_eq!(cli.name.as_deref(), Some("from-file"));
        assert_eq!(cli.labels, vec!["a=1", "b=2"]);
        assert!(cli.dry_run);
        assert_eq!(cli.partitions, 3);
        let cli: Cli = parse_layered_from(args(&["--config", &config, "--listen", "1.2.3.4:5", "--label", "c=3"]));
        assert_eq!(cli.listen, "1.2.3.4:5", "flags win over the file");
        assert_eq!(cli.labels, vec!["c=3"], "a repeated flag replaces the file's list");
    }

    #[test]
    fn a_required_setting_may_come_from_the_file_alone() {
        let (_dir, config) = config_file("catalog = \"file:///c\"\n");
        let cli: Cli = try_parse_layered_from(args(&["--config", &config])).unwrap();
        assert_eq!(cli.catalog, "file:///c");
        assert_eq!(cli.listen, "127.0.0.1:1", "defaults stay under the file");
        let (_dir, empty) = config_file("");
        assert!(error(&["--config", &empty]).contains("--catalog"), "still required somewhere");
    }

    #[test]
    fn false_leaves_a_flag_unset_and_underscores_or_dashes_both_name_it() {
        let (_dir, config) = config_file("catalog = \"x\"\ndry_run = false\npcap-file = \"a.pcap\"\n");
        let cli: Cli = try_parse_layered_from(args(&["--config", &config])).unwrap();
        assert!(!cli.dry_run);
        assert_eq!(cli.pcap_file.as_deref(), Some("a.pcap"));
    }

    #[test]
    fn a_flag_overrides_the_files_choice_within_an_exclusive_group() {
        let (_dir, config) = config_file("catalog = \"x\"\npcap_file = \"a.pcap\"\n");
        let cli: Cli = try_parse_layered_from(args(&["--config", &config, "--interface", "lo"])).unwrap();
        assert_eq!((cli.interface.as_deref(), cli.pcap_file), (Some("lo"), None));
    }

    #[test]
    fn bad_files_get_one_clear_error() {
        let (_dir, unknown) = config_file("catalog = \"x\"\nlisten_on = \"a\"\n");
        assert!(error(&["--config", &unknown]).contains("unknown setting \"listen_on\""));
        let (_dir, nested) = config_file("config = \"other.toml\"\n");
        assert!(error(&["--config", &nested]).contains("cannot name another"));
        let (_dir, table) = config_file("[catalog]\nurl = \"x\"\n");
        assert!(error(&["--config", &table]).contains("not a table"));
        let (_dir, syntax) = config_file("catalog = \n");
        assert!(error(&["--config", &syntax]).contains("c.toml"));
        assert!(
            error(&["--config", "/nonexistent/c.toml"]).contains("cannot read the config file /nonexistent/c.toml")
        );
        let (_dir, bad_value) = config_file("catalog = \"x\"\npartitions = \"many\"\n");
        let message = error(&["--config", &bad_value]);
        assert!(
            message.contains("'many'") && message.contains("tip: --partitions comes from the config file"),
            "{message}"
        );
        let (_dir, good) = config_file("catalog = \"x\"\n");
        let message = error(&["--config", &good, "--partitions", "many"]);
        assert!(message.contains("'many'") && !message.contains("tip:"), "{message}");
        let (_dir, empty) = config_file("");
        let message = error(&["--config", &empty]);
        assert!(message.contains("--catalog") && message.contains("tip: settings also come from"), "{message}");
    }

    #[test]
    fn help_and_version_end_the_first_pass() {
        let e = try_parse_layered_from::<Cli>(args(&["--help"])).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayHelp);
    }

    /// Environment variables are per process: this test reruns itself in a child with
    /// the variables set, so no other test can see them.
    #[test]
    fn env_wins_over_the_file_and_may_name_it() {
        const CHILD: &str = "REPRISE_PROCESS_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let (_dir, config) = config_file("catalog = \"from-file\"\nlisten = \"0.0.0.0:9\"\nname = \"n\"\n");
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "layered::tests::env_wins_over_the_file_and_may_name_it", "--test-threads=1"])
                .env(CHILD, "1")
                .env("REPRISE_PROCESS_TEST_CONFIG", &config)
                .env("REPRISE_PROCESS_TEST_CATALOG", "from-env")
                .env_remove("REPRISE_PROCESS_TEST_LISTEN")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && stdout.contains("1 passed"),
                "{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            return;
        }
        let cli: Cli = try_parse_layered_from(args(&[])).unwrap();
        assert_eq!(cli.catalog, "from-env", "env wins over the file");
        assert_eq!(cli.listen, "0.0.0.0:9", "the file named by the env is read");
        assert_eq!(cli.name.as_deref(), Some("n"));
        let cli: Cli = try_parse_layered_from(args(&["--catalog", "from-flag"])).unwrap();
        assert_eq!(cli.catalog, "from-flag", "flags win over env");
    }
}
