//! tapnet-engine: everything with I/O. Ports (TAP, memory), the buffer pool, the pipeline
//! runtime (workers, rings, stages, software segmentation for egress ports without offloads
//! through `tapnet_wire::gso`), network namespaces and netlink configuration, and the
//! in-process rig.

pub mod daemon;
pub mod hostnet;
pub mod netlink;
pub mod netns;
pub mod pool;
pub mod port;
pub mod rig;
pub mod runtime;
pub mod tap;

pub use pool::{BufferPool, Handle, PoolConfig};
pub use port::{MemPeer, MemPort, Port, PortInfo, TapPort};
pub use runtime::{Engine, EngineConfig, EngineError, EngineStats, StageKind, WorkerMapping};
pub use tapnet_switch::{DomainConfig, DomainId, MacAddr, PortId};
