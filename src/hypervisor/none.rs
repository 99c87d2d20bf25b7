//! The `none` driver: records what servers should be doing and runs nothing.

use std::collections::HashSet;
use std::sync::Mutex;

use super::{Hypervisor, HypervisorError, StopMethod, VmSpec, VmState};

#[derive(Default)]
pub struct RecordOnly {
    running: Mutex<HashSet<String>>,
}

impl Hypervisor for RecordOnly {
    fn name(&self) -> &'static str {
        "none"
    }

    fn start(&self, spec: &VmSpec) -> Result<(), HypervisorError> {
        tracing::info!(
            server = %spec.server_uuid,
            disks = spec.disks.len(),
            "hypervisor 'none': recording the server as running; no virtual machine is started"
        );
        self.running
            .lock()
            .unwrap()
            .insert(spec.server_uuid.clone());
        Ok(())
    }

    fn stop(&self, server_uuid: &str, method: StopMethod) -> Result<(), HypervisorError> {
        tracing::info!(
            server = %server_uuid, ?method,
            "hypervisor 'none': recording the server as stopped"
        );
        self.running.lock().unwrap().remove(server_uuid);
        Ok(())
    }

    fn state(&self, server_uuid: &str) -> VmState {
        if self.running.lock().unwrap().contains(server_uuid) {
            VmState::Running
        } else {
            VmState::Stopped
        }
    }

    fn running(&self) -> Vec<String> {
        self.running.lock().unwrap().iter().cloned().collect()
    }

    /// Nothing ever ran, so what was recorded stays true across restarts.
    fn adopt(&self, server_uuid: &str) -> VmState {
        self.running.lock().unwrap().insert(server_uuid.to_string());
        VmState::Running
    }

    fn console_log(&self, _server_uuid: &str, _max: usize) -> Result<Vec<u8>, HypervisorError> {
        Ok(
            b"(hypervisor 'none' runs no virtual machines, so there is no console output)\n"
                .to_vec(),
        )
    }
}
