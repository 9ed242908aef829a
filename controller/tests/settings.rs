//! The controller's settings: every flag has an environment variable and a TOML key, the
//! example config file is complete and parses, and the required settings need no flag.

use std::path::Path;
use std::time::Duration;

use clap::CommandFactory;
use reprise_controller::ControllerConfig;
use reprise_process::testing::{
    assert_every_flag_has_env, assert_example_config, assert_failed_after_parsing, run_binary,
};

const BINARY: &str = env!("CARGO_BIN_EXE_reprise-controller");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config/controller.toml");
const TIMEOUT: Duration = Duration::from_secs(30);
/// A catalog URL that is a fine setting but cannot be opened: a run that got past
/// parsing fails right away on it.
const BAD_CATALOG: &str = "nowhere://catalog";
const OPEN_ERROR: &str = "cannot open catalog nowhere://catalog";

#[test]
fn every_flag_has_an_env_variable() {
    assert_every_flag_has_env(&ControllerConfig::command());
}

#[test]
fn the_example_config_names_every_flag_and_parses() {
    assert_example_config::<ControllerConfig>(Path::new(EXAMPLE));
}

#[test]
fn required_settings_may_come_from_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("controller.toml");
    let log = format!("file://{}/log", dir.path().display());
    let text = format!(
        "catalog = \"{BAD_CATALOG}\"\nlog = \"{log}\"\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
         start_lead_ms = 500\nlog-format = \"json\"\n"
    );
    std::fs::write(&file, text).unwrap();
    let args = vec!["reprise-controller".into(), "--config".into(), file.clone().into_os_string()];
    let config: ControllerConfig = reprise_process::try_parse_layered_from(args).unwrap();
    assert_eq!((config.catalog.as_str(), config.log.as_str()), (BAD_CATALOG, log.as_str()));
    assert_eq!((config.start_lead_ms, config.logging.log_format), (500, reprise_process::LogFormat::Json));

    let run = run_binary(Path::new(BINARY), &["--config", file.to_str().unwrap()], &[], TIMEOUT);
    assert_failed_after_parsing(&run, OPEN_ERROR);
}

#[test]
fn required_settings_may_come_from_the_env_alone() {
    let dir = tempfile::tempdir().unwrap();
    let log = format!("file://{}/log", dir.path().display());
    let env = [
        ("REPRISE_CATALOG", BAD_CATALOG),
        ("REPRISE_LOG", log.as_str()),
        ("REPRISE_CONTROLLER_LISTEN", "127.0.0.1:0"),
        ("REPRISE_CONTROLLER_HTTP", "127.0.0.1:0"),
    ];
    let run = run_binary(Path::new(BINARY), &[], &env, TIMEOUT);
    assert_failed_after_parsing(&run, OPEN_ERROR);
}
