//! Generates the wire types. Messages that are also JSON documents (catalog entries, the
//! stats API, stored replay options) derive serde with the same field names; enum fields
//! travel as lower-case names (`"running"`), through the modules of `crate::names`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const JSON_MESSAGES: &[&str] = &[
        "PartitionRange",
        "Recording",
        "WorkerInfo",
        "CaptureCounters",
        "Ledger",
        "LedgerEntry",
        "CaptureInfo",
        "ReplayOptions",
        "RequestRules",
        "Percentiles",
        "EndpointResult",
        "EndpointDiff",
        "DiffSample",
        "DiffOptions",
        "WorkerProgress",
        "ReplayStatus",
        "TimelinePoint",
        "ReplayEvent",
        "ReplayPlanView",
        "PlannedWorker",
        "PartitionShare",
    ];
    const JSON_ENUMS: &[&str] = &["RecordingState", "ReplayState", "PacingMode"];
    // (message.field, module in crate::names)
    const ENUM_FIELDS: &[(&str, &str)] = &[
        ("Recording.state", "recording_state"),
        ("ReplayStatus.state", "replay_state"),
        ("ReplayStatus.pacing", "pacing_mode"),
        ("ReplayOptions.pacing", "pacing_mode"),
    ];

    // A record's HTTP bytes (and trailers) decode as slices of the log message they came
    // in: no copy per record on the replay path.
    let mut builder = tonic_prost_build::configure()
        .btree_map(".")
        .bytes(".reprise.v1.TrafficRecord.http")
        .bytes(".reprise.v1.TrafficRecord.trailers");
    for message in JSON_MESSAGES {
        builder = builder.message_attribute(
            format!(".reprise.v1.{message}"),
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        );
    }
    for name in JSON_ENUMS {
        builder = builder.enum_attribute(
            format!(".reprise.v1.{name}"),
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"snake_case\")]",
        );
    }
    for (field, module) in ENUM_FIELDS {
        builder = builder
            .field_attribute(format!(".reprise.v1.{field}"), format!("#[serde(with = \"crate::names::{module}\")]"));
    }
    builder.compile_protos(
        &[
            "proto/reprise/v1/traffic.proto",
            "proto/reprise/v1/catalog.proto",
            "proto/reprise/v1/worker.proto",
            "proto/reprise/v1/controller.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
