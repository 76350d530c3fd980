//! A collector with a bug (it panics) is recorded as failed with the panic message; the others finish and the
//! bundle is written and verifies. Driven through the library, since no shipped source kind panics on purpose.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use preserve::{
    bundle::{
        manifest::{BundleStatus, CollectorStatus},
        verify,
    },
    config::{EnvSource, Environment},
    progress::Progress,
    runner::{PlannedCollector, Stop},
    snapshot::{self, Plan},
    sources::{CollectError, Collection, Outcome, Source},
};

struct Env(HashMap<String, String>);
impl EnvSource for Env {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

#[derive(Debug)]
struct Panics;
#[async_trait]
impl Source for Panics {
    fn describe(&self, _: &Environment) -> String {
        "a buggy collector".into()
    }
    async fn collect(&self, cx: Collection) -> Result<Outcome, CollectError> {
        use std::io::Write;
        let mut a = cx.text_artifact("before-panic.txt", "text/plain")?;
        a.write_all(b"written before the bug hit\n").unwrap();
        let v: Vec<u8> = Vec::new();
        let _ = v[3]; // index out of bounds
        Ok(Outcome::default())
    }
}

#[derive(Debug)]
struct Writes;
#[async_trait]
impl Source for Writes {
    fn describe(&self, _: &Environment) -> String {
        "a healthy collector".into()
    }
    async fn collect(&self, cx: Collection) -> Result<Outcome, CollectError> {
        use std::io::Write;
        let mut a = cx.text_artifact("ok.txt", "text/plain")?;
        a.write_all(b"fine\n").map_err(CollectError::io("write"))?;
        a.add_records(1);
        a.finish().map_err(CollectError::io("finish"))?;
        Ok(Outcome::default())
    }
}

fn planned(name: &str, source: Arc<dyn Source>) -> PlannedCollector {
    PlannedCollector {
        name: name.into(),
        kind: "test".into(),
        describe: name.into(),
        source,
        timeout: Duration::from_secs(10),
        origin: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_collector_is_recorded_and_the_bundle_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env(HashMap::from([
        ("HOME".to_string(), dir.path().display().to_string()),
        ("PRESERVE_OUT".to_string(), dir.path().join("out").display().to_string()),
    ]));
    let env = Environment::load(None, &env).unwrap();
    let plan = Plan {
        profile_label: "custom".into(),
        profiles: vec![],
        collectors: vec![planned("buggy", Arc::new(Panics)), planned("healthy", Arc::new(Writes))],
        window: Default::default(),
        trigger: preserve::bundle::manifest::Trigger {
            kind: preserve::bundle::manifest::TriggerKind::Cli,
            alerts: vec![],
            redactions: vec![],
        },
        labels: Default::default(),
        fingerprint_key: preserve::redact::FingerprintKey::per_bundle().unwrap(),
        fingerprint_key_warning: None,
        bundle_id: None,
        late_alerts: Default::default(),
        upload: false,
    };
    let outcome = snapshot::execute(plan, Arc::new(env), Default::default(), &Stop::default(), &Progress::new(true))
        .await
        .unwrap();
    assert_eq!(outcome.exit_code(), 3);
    assert_eq!(outcome.manifest.status, BundleStatus::Partial);
    let buggy = outcome.manifest.collectors.iter().find(|c| c.name == "buggy").unwrap();
    assert_eq!(buggy.status, CollectorStatus::Failed);
    assert!(buggy.error.as_deref().unwrap().contains("collector panicked: index out of bounds"), "{:?}", buggy.error);
    assert_eq!(buggy.artifacts.len(), 1, "what it wrote before panicking is kept");
    assert_eq!(buggy.artifacts[0].bytes, 27);
    let healthy = outcome.manifest.collectors.iter().find(|c| c.name == "healthy").unwrap();
    assert_eq!(healthy.status, CollectorStatus::Ok);
    assert_eq!(healthy.artifacts[0].records, Some(1));

    let report = verify::verify(&outcome.bundle.archive).unwrap();
    assert!(report.intact(), "{:?}", report.problems);
}
