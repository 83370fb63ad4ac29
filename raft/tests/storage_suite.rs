//! openraft's storage conformance suite against the log storage and state machine on the engine.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use tasklog_engine::{Options, SyncPolicy, TaskStore};
use tasklog_raft::{LogStore, StateMachine, TypeConfig};
use tempfile::TempDir;

struct Builder;

fn fail(error: &(impl std::error::Error + 'static)) -> StorageError<TypeConfig> {
    StorageError::read(TypeConfig::err_from_error(error))
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(|e| fail(&e))?;
        let options = Options {
            sync: SyncPolicy::Never,
            ..Options::default()
        };
        let store = Arc::new(
            TaskStore::open_replica(dir.path().join("log"), options).map_err(|e| fail(&e))?,
        );
        let log = LogStore::open(store.clone()).map_err(|e| fail(&e))?;
        let sm = StateMachine::new(store, dir.path().join("snapshots"));
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).await.unwrap();
}
