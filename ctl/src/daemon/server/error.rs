//! Errors as the API answers them: an HTTP status and Docker's `{"message": …}` body.
//! This is the one place where a [`DaemonError`] becomes a status.

use std::fmt;

use crate::daemon::chain::chain;
use crate::daemon::core::DaemonError;
use crate::daemon::ipam::IpamError;

/// An error the API returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code (400, 403, 404, 409, 500, 503).
    pub status: u16,
    /// What went wrong, in words a user can act on.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed or asks for something invalid.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    /// 404: no such route, network, sandbox or endpoint.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> ApiError {
        ApiError::new(status(&e), chain(&e))
    }
}

/// The HTTP status Docker's API returns for each IPAM error. libnetwork tags errors with
/// errdefs classes and `api/server/httpstatus/status.go` maps them
/// (InvalidParameter → 400, Forbidden → 403, NotFound → 404, Unavailable → 503,
/// untyped/Internal → 500):
///
/// | variant | status | source |
/// |---|---|---|
/// | `InvalidConfig` | 400 | `daemon/network.go` `errdefs.InvalidParameter(validateIpamConfig(..))` |
/// | `MissingSubnet`, `AuxWithoutSubnet` | 400 | a client-side check in docker; a bad parameter |
/// | `SubPoolWithoutPool` | 500 | `defaultipam/allocator.go` `parseErr` is `types.InternalErrorf` |
/// | `InvalidPool` | 400 | `ipamapi.ErrInvalidPool` is InvalidParameter |
/// | `PoolOverlap` | 403 | `RequestPool` wraps in `types.ForbiddenErrorf("invalid pool request: %v")` |
/// | `NoMoreSubnets` | 400 | `ipamapi.ErrNoMoreSubnets` is InvalidParameter |
/// | `Gateway` | 500 | `network.go` `types.InternalErrorf("failed to allocate gateway ...")` |
/// | `AuxNotInPool` | 403 | `network.go` `types.ForbiddenErrorf("auxiliary address ...")` |
/// | `AuxAddress` | 500 | `network.go` `types.InternalErrorf("failed to allocate secondary ip address ...")` |
/// | `OutOfRange` | 400 | `ipamapi.ErrIPOutOfRange` is InvalidParameter |
/// | `AddressInUse` | 403 | `ipamapi.ErrIPAlreadyAllocated` is Forbidden |
/// | `NoAvailableAddresses` | 503 | `ipamapi.ErrNoAvailableIPs` is Unavailable (but see below) |
/// | `PoolNotFound` | 404 | `types.NotFoundErrorf("cannot find address pool ...")` |
/// | `BadPool` | 400 | `ipamapi.ErrBadPool` is InvalidParameter |
/// | `BadDefaultPool` | 500 | daemon configuration, not an API input |
///
/// When a container's dynamic address fails because the pool is full, libnetwork
/// (`endpoint.go` `assignAddressVersion`) replaces the error with an untyped
/// "no available IPv4 addresses on this network's address pools: NAME (ID)", so the
/// API answers 500 with that text; that rewording is the daemon's to do.
pub(crate) fn ipam_status(e: &IpamError) -> u16 {
    use IpamError as E;
    match e {
        E::InvalidConfig(_)
        | E::MissingSubnet
        | E::AuxWithoutSubnet(_)
        | E::InvalidPool
        | E::NoMoreSubnets
        | E::OutOfRange { .. }
        | E::BadPool(_) => 400,
        E::PoolOverlap | E::AuxNotInPool { .. } | E::AddressInUse(_) => 403,
        E::PoolNotFound(_) => 404,
        E::NoAvailableAddresses => 503,
        E::SubPoolWithoutPool(_)
        | E::Gateway { .. }
        | E::AuxAddress { .. }
        | E::BadDefaultPool { .. } => 500,
    }
}

/// The HTTP status of a daemon error, Docker's where Docker has the error.
pub(super) fn status(e: &DaemonError) -> u16 {
    use DaemonError as E;
    match e {
        E::UnknownOption { .. }
        | E::InvalidBool { .. }
        | E::InvalidMtu { .. }
        | E::InvalidHostBinding { .. }
        | E::InvalidIpv4 { .. }
        | E::EmptyNetworkName
        | E::DriverUnavailable(_)
        | E::Ipv6Unavailable
        | E::OneSubnetOnly
        | E::AmbiguousNetwork { .. }
        | E::AmbiguousSandbox(_)
        | E::StaticIpOnPredefined
        | E::NoSubnetContains(_)
        | E::NoIpam(_)
        | E::InvalidSandboxName(_)
        | E::NetworkGivenTwice(_)
        | E::HostNetworkSandbox
        | E::NoneCombined
        | E::NoExternalNetwork(_)
        | E::ProcessNotRunning(_)
        | E::NotRootless(_)
        | E::FdCount { .. }
        | E::NoTapFor { .. }
        | E::InterfaceGivenTwice(_)
        | E::BadTap { .. }
        | E::WrongTap { .. }
        | E::NoSuchInterface { .. }
        | E::TooManyPorts { .. }
        | E::HostRangeTooLong { .. }
        | E::OverlayUnsupported(_)
        | E::BadDockerId(_)
        | E::NotAllocated(_)
        | E::CniParameter { .. }
        | E::CniNoNamespace(_) => 400,
        E::OnlyOneInstance(_)
        | E::IngressNeedsSwarm
        | E::PredefinedNetwork(_)
        | E::ActiveEndpoints { .. }
        | E::RootlessConnect(_)
        | E::ExternalSandbox { .. }
        | E::EndpointJoined(_)
        | E::PoolInUse { .. }
        | E::AlreadyConnected { .. }
        | E::ConnectAtCreationOnly { .. }
        | E::OnNoneNetwork(_)
        | E::NotAttachable(_)
        | E::NotConnected { .. }
        | E::NeedsRoot
        | E::NotOwner { .. }
        | E::CniDriver { .. } => 403,
        E::NetworkNotFound(_)
        | E::SandboxNotFound(_)
        | E::PluginNotFound(_)
        | E::NoDockerEndpoint(_)
        | E::NoPool(_)
        | E::CniUnknown { .. } => 404,
        E::NetworkNameTaken(_)
        | E::SandboxNameTaken { .. }
        | E::HasInterfaces(_)
        | E::NetworkIdTaken(_)
        | E::EndpointExists(_)
        | E::CniAttached { .. }
        | E::CniInterfaceExists { .. } => 409,
        E::Ipam(i) => ipam_status(i),
        E::NotSwarmManager => 503,
        E::Swarm(s) => s.status,
        E::PoolFull { .. }
        | E::ReleasePool(_)
        | E::PortBinding { .. }
        | E::PortsLostEndpoint
        | E::PortsWithoutAddress
        | E::StateDir { .. }
        | E::Store(_)
        | E::EncodeIpam(_)
        | E::DecodeIpam(_)
        | E::StoredSubnet(_)
        | E::StoredVni(_)
        | E::Plumbing(_)
        | E::CniCheck { .. } => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::plumbing::PlumbingError;

    #[test]
    fn api_error_displays_its_message() {
        let e = ApiError::not_found("network x not found");
        assert_eq!(
            (e.status, e.to_string()),
            (404, "network x not found".to_string())
        );
        assert_eq!(ApiError::bad_request("b").status, 400);
    }

    #[test]
    fn daemon_errors_carry_dockers_statuses_and_each_cause_once() {
        let e = ApiError::from(DaemonError::NetworkNotFound("pets".into()));
        assert_eq!(
            (e.status, e.message.as_str()),
            (404, "network pets not found")
        );
        let e = ApiError::from(DaemonError::Ipam(IpamError::PoolOverlap));
        assert_eq!(
            (e.status, e.message.as_str()),
            (
                403,
                "invalid pool request: Pool overlaps with other one on this address space"
            )
        );
        let e = ApiError::from(DaemonError::ReleasePool(IpamError::PoolNotFound(
            "p".into(),
        )));
        assert_eq!(e.status, 500);
        let e = ApiError::from(DaemonError::Plumbing(PlumbingError::NoDatapath));
        assert_eq!(
            (e.status, e.message.as_str()),
            (500, "network has no datapath")
        );
        // A cause is printed once, after what failed.
        let io = std::io::Error::from_raw_os_error(libc::EPERM);
        let e = ApiError::from(DaemonError::StateDir {
            path: "/x".into(),
            source: io,
        });
        assert_eq!(
            e.message,
            "cannot create /x: Operation not permitted (os error 1)"
        );
        let tap = PlumbingError::NotATap(tapnet_engine::sys::tap::TapError::NotTun {
            source: std::io::Error::from_raw_os_error(libc::EBADFD),
        });
        let e = ApiError::from(DaemonError::BadTap {
            ifname: "eth0".into(),
            source: tap,
        });
        assert_eq!(e.status, 400);
        assert!(
            e.message.starts_with("the fd sent for eth0: "),
            "{}",
            e.message
        );
        assert_eq!(
            e.message.matches("File descriptor in bad state").count(),
            1,
            "{}",
            e.message
        );
    }
}
