//! tapnet-engine: the datapath with its I/O. Ports (TAP, memory, gateway), the buffer
//! pool, the pipeline runtime (workers, rings, stages), host networking (host sockets for
//! egress and published ports), the OS plumbing (TAP, network namespaces, netlink) and the
//! in-process rig. No HTTP, async runtime or database: the control plane (`tapnet-ctl`)
//! drives the engine through its API.

pub mod hostnet;
pub mod overlay;
pub mod pool;
pub mod port;
pub mod rig;
pub mod runtime;
pub mod sys;
pub mod wake;

pub use pool::{BufferPool, Handle, PoolConfig, PoolFree};
pub use port::{MemPeer, MemPort, Port, PortInfo, TapPort};
pub use runtime::{Engine, EngineConfig, EngineError, EngineStats, StageKind, WorkerMapping};
pub use tapnet_switch::{DomainConfig, DomainId, MacAddr, PortId};
