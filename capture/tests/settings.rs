//! The capture daemon's settings: every flag has an environment variable and a TOML key,
//! the example config file is complete and parses, and the required settings need no flag.

use std::path::Path;
use std::time::Duration;

use clap::CommandFactory;
use reprise_capture::CaptureConfig;
use reprise_process::testing::{
    assert_every_flag_has_env, assert_example_config, assert_failed_after_parsing, run_binary,
};

const BINARY: &str = env!("CARGO_BIN_EXE_reprise-capture");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config/capture.toml");
const TIMEOUT: Duration = Duration::from_secs(30);
/// A log URL that is a fine setting but cannot be opened: a run that got past parsing
/// fails right away on it.
const BAD_LOG: &str = "nowhere://log";
const OPEN_ERROR: &str = "cannot open nowhere://log";

#[test]
fn every_flag_has_an_env_variable() {
    assert_every_flag_has_env(&CaptureConfig::command());
}

#[test]
fn the_example_config_names_every_flag_and_parses() {
    assert_example_config::<CaptureConfig>(Path::new(EXAMPLE));
}

#[test]
fn required_settings_may_come_from_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("capture.toml");
    let text = format!(
        "log = \"{BAD_LOG}\"\npcap_file = \"/nonexistent.pcap\"\nport = [80, 8080]\ntrack-responses = true\n\
         log-format = \"json\"\n"
    );
    std::fs::write(&file, text).unwrap();
    let args = vec!["reprise-capture".into(), "--config".into(), file.clone().into_os_string()];
    let config: CaptureConfig = reprise_process::try_parse_layered_from(args).unwrap();
    assert_eq!(config.log, BAD_LOG);
    assert_eq!((config.port, config.track_responses), (vec![80, 8080], true));
    assert_eq!(config.logging.log_format, reprise_process::LogFormat::Json);

    let run = run_binary(Path::new(BINARY), &["--config", file.to_str().unwrap()], &[], TIMEOUT);
    assert_failed_after_parsing(&run, OPEN_ERROR);
}

#[test]
fn required_settings_may_come_from_the_env_alone() {
    let env = [
        ("REPRISE_LOG", BAD_LOG),
        ("REPRISE_CAPTURE_PCAP_FILE", "/nonexistent.pcap"),
        ("REPRISE_CAPTURE_PORT", "80,8080"),
        ("REPRISE_CAPTURE_TRACK_RESPONSES", "true"),
    ];
    let run = run_binary(Path::new(BINARY), &[], &env, TIMEOUT);
    assert_failed_after_parsing(&run, OPEN_ERROR);
}

#[test]
fn flags_win_over_the_file_even_across_the_input_choice() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("capture.toml");
    std::fs::write(&file, "log = \"file:///l\"\ninterface = \"eth0\"\nsnaplen = 100\n").unwrap();
    let args = ["reprise-capture", "--config", file.to_str().unwrap(), "--pcap-file", "a.pcap", "--snaplen", "200"];
    let config: CaptureConfig = reprise_process::try_parse_layered_from(args.map(Into::into).to_vec()).unwrap();
    assert_eq!((config.interface, config.pcap_file), (None, Some("a.pcap".into())));
    assert_eq!(config.snaplen, 200);
}
