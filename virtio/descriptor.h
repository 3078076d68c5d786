// A descriptor chain as the queue hands it to a device: already walked, bounds-checked against
// guest memory, loop-free and with indirect tables expanded. Devices never see raw rings.
#pragma once

#include <cstdint>
#include <vector>

namespace vessel::virtio {

struct Descriptor {
    uint64_t addr;  // guest-physical; [addr, addr+len) lies inside one guest RAM region
    uint32_t len;
    bool device_writable;  // VIRTQ_DESC_F_WRITE: the device writes, the driver reads
};

struct DescriptorChain {
    uint16_t head = 0;  // index to hand back in the used ring
    std::vector<Descriptor> descs;
};

}  // namespace vessel::virtio
