//! tapnet-engine: everything with I/O. Ports (TAP, memory), the buffer pool, the pipeline
//! runtime (workers, rings, stages), network namespaces and netlink configuration, software
//! segmentation for egress ports without offloads, and the in-process rig.

pub mod daemon;
pub mod gso;
pub mod hostnet;
pub mod pool;
pub mod port;
pub mod rig;
pub mod runtime;
pub mod sys;
pub mod vnet;
pub mod wake;

pub use pool::{BufferPool, Handle, PoolConfig};
pub use port::{MemPeer, MemPort, Port, PortInfo, TapPort};
pub use runtime::{Engine, EngineConfig, EngineError, EngineStats, StageKind, WorkerMapping};
pub use tapnet_switch::{DomainConfig, DomainId, MacAddr, PortId};
