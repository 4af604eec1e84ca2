//! The conformance suite on the `file` engine: once built directly with the bincode
//! codec, once built from configuration through the registry with the JSON codec. Each
//! case gets a new private temp directory, removed at cleanup.

use std::sync::{Arc, Mutex};

use backend_file::FileStore;
use integration_tests::{StoreFactory, run_conformance};
use session_core::{
    BincodeCodec, BoxError, CodecKind, Config, EngineRegistry, SessionSettings, SessionStore,
};
use tempfile::TempDir;

struct FileFactory {
    codec: CodecKind,
    registry: EngineRegistry,
    dirs: Mutex<Vec<TempDir>>,
}

impl FileFactory {
    fn new(codec: CodecKind) -> Self {
        let registry = EngineRegistry::new();
        backend_file::register(&registry);
        FileFactory {
            codec,
            registry,
            dirs: Mutex::new(Vec::new()),
        }
    }

    fn new_dir(&self) -> Result<std::path::PathBuf, BoxError> {
        let dir = tempfile::Builder::new()
            .prefix("sessions-conformance-")
            .tempdir()?;
        let path = dir.path().join("sessions");
        self.dirs
            .lock()
            .map_err(|_| "poisoned directory list")?
            .push(dir);
        Ok(path)
    }

    fn config(&self, dir: &std::path::Path) -> Config {
        Config::from_toml("engine = \"file\"")
            .with("codec", self.codec)
            .with("file.path", dir)
    }
}

#[session_core::async_trait]
impl StoreFactory for FileFactory {
    async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError> {
        let dir = self.new_dir()?;
        match self.codec {
            // Built in code, as an application would without configuration.
            CodecKind::Bincode => Ok(Arc::new(
                FileStore::builder()
                    .dir(dir)
                    .codec(Arc::new(BincodeCodec::default()))
                    .build()?,
            )),
            // Built by name from configuration (`[file] path = ...`, `codec = "json"`).
            CodecKind::Json => Ok(self.registry.build(&self.config(&dir)).await?),
        }
    }

    fn settings(&self) -> SessionSettings {
        SessionSettings {
            engine: "file".into(),
            codec: self.codec,
            ..SessionSettings::default()
        }
    }

    async fn cleanup(&self) -> Result<(), BoxError> {
        let dirs = std::mem::take(&mut *self.dirs.lock().map_err(|_| "poisoned directory list")?);
        for dir in dirs {
            dir.close()?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_with_bincode_passes_the_conformance_suite() {
    run_conformance("file(bincode)", &FileFactory::new(CodecKind::Bincode))
        .await
        .assert_pinned(213, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_with_json_from_config_passes_the_conformance_suite() {
    run_conformance(
        "file(json, from config)",
        &FileFactory::new(CodecKind::Json),
    )
    .await
    .assert_pinned(213, 0);
}
