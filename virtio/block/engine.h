// The block device's I/O engine is the shared one in virtio/io (also used by virtio-net); these
// names keep the block code and its callers (the CLI's --disk engine=...) unchanged.
#pragma once

#include "virtio/io/engine.h"

namespace vessel::virtio::block {

using io::Completion;
using io::EngineChoice;
using io::EnginePreference;
using io::IoEngine;
using io::make_engine;
using io::Op;
using io::OpKind;
using io::probe_io_uring;
using io::UringSupport;

}  // namespace vessel::virtio::block
