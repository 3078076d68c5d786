// A tap interface for virtio-net: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR with a 12-byte vnet header
// (struct virtio_net_hdr_v1, the same header the guest uses), single queue.
//
// A tap vessel creates is not persistent: the kernel removes it when the last reference goes
// (the fd, and the io_uring that registered it), so it vanishes with the VM even when the VMM
// is killed. A tap that existed before (`ip tuntap add ... mode tap`, persistent) is only
// attached to and stays. The fd is O_NONBLOCK: the engines never wait in a read or write; the
// io_uring engine waits for a frame with a poll linked to each read (virtio/io/uring_engine.h).
//
// Host set-up: every failure throws std::system_error naming the tap and the step.
#pragma once

#include <string>

#include "vmm/fd.h"

namespace vessel::virtio::net {

struct TapSpec {
    // Interface to attach to, or to create if it does not exist; empty: the kernel creates one
    // with a free name (tap0, tap1, ...).
    std::string name;
    // Only attach: fail with "tap NAME: not found" instead of creating it.
    bool must_exist = false;
    // An open tap to adopt instead (e.g. passed by a parent process); it is duplicated, so the
    // caller may close its own. It must have been set up with IFF_TAP | IFF_NO_PI |
    // IFF_VNET_HDR. O_NONBLOCK is set on it (the flag lives in the shared open file).
    int fd = -1;
};

class Tap {
  public:
    static Tap open(const TapSpec& spec);

    int fd() const { return fd_.get(); }
    const std::string& name() const { return name_; }
    // vessel created the interface (it goes away with the last reference).
    bool created() const { return created_; }
    // TUN_F_* offloads the tap accepted when probed at open().
    unsigned supported_offloads() const { return supported_offloads_; }
    // The interface's MTU when opened (1500 if it could not be read).
    int mtu() const { return mtu_; }

    // TUNSETOFFLOAD: which offloaded frames (partial checksums, GSO) the kernel may hand us.
    // Throws std::system_error.
    void set_offloads(unsigned tun_flags);
    unsigned offloads() const { return offloads_; }
    // TUNSETCARRIER (Linux 5.0+): the host sees the link go down or up. Best effort: false if
    // the kernel does not support it.
    bool set_carrier(bool up);

  private:
    UniqueFd fd_;
    std::string name_;
    bool created_ = false;
    unsigned supported_offloads_ = 0;
    unsigned offloads_ = 0;
    int mtu_ = 1500;
};

}  // namespace vessel::virtio::net
