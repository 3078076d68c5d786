#include "runtime/container/warm.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <thread>

#include "guest/agent/client.h"
#include "guest/init/protocol.h"
#include "guest/initramfs/cpio.h"
#include "runtime/container/container.h"
#include "snapshot/snapshot.h"
#include "snapshot/vm_snapshot.h"
#include "virtio/attach.h"
#include "virtio/block/device.h"
#include "virtio/net/device.h"
#include "virtio/vsock/cid.h"
#include "virtio/vsock/device.h"
#include "vmm/fd.h"
#include "vmm/machine.h"

namespace vessel::container {
namespace {

const char kCmdline[] =
    "console=ttyS0 reboot=k panic=-1 pci=off nomodule 8250.nr_uarts=1 i8042.noaux "
    "i8042.nomux i8042.dumbkbd quiet loglevel=1";

constexpr uint64_t kPlaceholderBytes = 1 << 20;

std::string file_id(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw_errno("stat " + path);
    return path + ":" + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
           std::to_string(st.st_mtim.tv_nsec);
}

// The child's work: boot, wait for the agent, snapshot into `tmp`. Returns the exit status.
int build(const WarmKey& k, const std::string& tmp) {
    try {
        vmm::MachineConfig cfg;
        cfg.kernel = k.kernel;
        cfg.memory_mib = k.memory_mib;
        cfg.vcpus = k.vcpus;
        cfg.cmdline = container_cmdline();
        std::ifstream in(k.initrd, std::ios::binary);
        if (!in) throw_errno("opening initramfs " + k.initrd);
        cfg.initrd.assign(std::istreambuf_iterator<char>(in), {});
        // No root disk: the agent waits in the initramfs until a container's disk arrives.
        std::string run = initramfs::make_run_archive({}, {}, "", "", std::nullopt);
        while (cfg.initrd.size() % 4) cfg.initrd.push_back(0);
        cfg.initrd.insert(cfg.initrd.end(), run.begin(), run.end());
        UniqueFd null(::open("/dev/null", O_WRONLY | O_CLOEXEC));
        cfg.console_fd = null.get();
        vmm::validate(cfg);

        const std::string placeholder = tmp + "/placeholder.img";
        {
            UniqueFd f(::open(placeholder.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
            if (!f || ::ftruncate(f.get(), kPlaceholderBytes) != 0)
                throw_errno("creating " + placeholder);
        }
        auto cid = virtio::vsock::CidLease::acquire(vsock_runtime_dir());
        virtio::vsock::VsockOptions vo;
        vo.guest_cid = cid.cid();
        vo.uds_path = tmp + "/template.vsock";
        auto vsock = std::make_shared<virtio::vsock::VsockDevice>(vo);
        virtio::block::BlockDeviceOptions bo;
        bo.disk.path = placeholder;

        std::shared_ptr<virtio::net::NetDevice> nic;
        if (k.nic) {
            // A tap nobody is attached to, in a network namespace of this child's own: it
            // and the namespace go away with the child. Each container brings its own tap.
            if (::unshare(CLONE_NEWNET) != 0) throw_errno("creating the template's namespace");
            nic = std::make_shared<virtio::net::NetDevice>(virtio::net::NetDeviceOptions{});
        }

        vmm::Machine m(std::move(cfg));
        std::vector<snapshot::AttachedDevice> devs;
        devs.push_back({"block",
                        {{"path", placeholder}, {"read_only", false}},
                        virtio::attach_mmio(m, std::make_shared<virtio::block::BlockDevice>(bo)),
                        {},
                        {}});
        if (nic)
            devs.push_back({"net",
                            {{"tap", nic->tap_name()}},
                            virtio::attach_mmio(m, nic),
                            {},
                            {virtio::net::NetDevice::kRxQueue}});
        devs.push_back({"vsock",
                        {{"cid", vo.guest_cid}, {"uds_path", vo.uds_path}},
                        virtio::attach_mmio(m, vsock),
                        {},
                        {0}});
        std::string failure;
        std::thread t([&] {
            try {
                UniqueFd conn = agent::connect_vsock_uds(vo.uds_path, guest::kDefaultAgentPort,
                                                         std::chrono::seconds(300));
                { agent::Client hello(std::move(conn)); }  // the agent answers: it is ready
                // The template must hold no connection, not even one closing: the guest would
                // finish closing it after every restore, under a CID it no longer has.
                for (int i = 0; i < 2000 && !vsock->state().connections.empty(); ++i)
                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
                snapshot::create(m, devs, tmp + "/snap",
                                 {{"cmdline", m.config().cmdline},
                                  {"agent_port", guest::kDefaultAgentPort},
                                  {"template", true}});
                m.stop({vmm::RunResult::Reason::ExitStatus, 0, "template saved"});
            } catch (const std::exception& e) {
                failure = e.what();
                m.stop({vmm::RunResult::Reason::Error, 0, e.what()});
            }
        });
        vmm::RunResult r = m.run();
        t.join();
        if (!failure.empty() || r.reason != vmm::RunResult::Reason::ExitStatus) {
            std::fprintf(stderr, "vessel: warm-start template: %s\n",
                         !failure.empty() ? failure.c_str() : r.detail.c_str());
            return 1;
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vessel: warm-start template: %s\n", e.what());
        return 1;
    }
}

}  // namespace

std::string container_cmdline() {
    return std::string(kCmdline) + " " + std::string(guest::kAgentCmdlineKey) + "=" +
           std::to_string(guest::kDefaultAgentPort);
}

std::string template_dir(const WarmKey& k) {
    std::string base;
    if (const char* d = std::getenv("VESSEL_TEMPLATE_DIR"); d && *d)
        base = d;
    else
        base = ::geteuid() == 0 ? "/var/lib/vessel/templates" : cache_dir() + "/templates";
    const std::string key = file_id(k.kernel) + "|" + file_id(k.initrd) + "|" +
                            std::to_string(k.memory_mib) + "|" + std::to_string(k.vcpus) + "|" +
                            (k.nic ? "nic|" : "") + VESSEL_SNAPSHOT_VESSEL_VERSION;
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(std::hash<std::string>{}(key)));
    return base + "/" + std::to_string(k.memory_mib) + "m-" + std::to_string(k.vcpus) + "c-" + hex;
}

void ensure_template(const WarmKey& k, const std::string& dir) {
    const std::string state = dir + "/snap/" + snapshot::kStateFile;
    if (::access(state.c_str(), F_OK) == 0) return;
    std::filesystem::create_directories(std::filesystem::path(dir).parent_path());
    UniqueFd lock(::open((dir + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock || ::flock(lock.get(), LOCK_EX) != 0) throw_errno("locking template " + dir);
    if (::access(state.c_str(), F_OK) == 0) return;  // another VMM made it meanwhile
    const std::string tmp = dir + ".tmp";
    std::filesystem::remove_all(tmp);
    if (::mkdir(tmp.c_str(), 0700) != 0) throw_errno("creating " + tmp);
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork");
    if (pid == 0) ::_exit(build(k, tmp));
    int ws = 0;
    while (::waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
        std::filesystem::remove_all(tmp);
        throw std::runtime_error("making the warm-start template failed (see the log)");
    }
    std::filesystem::remove_all(dir);
    if (::rename(tmp.c_str(), dir.c_str()) != 0) {
        const int e = errno;
        std::filesystem::remove_all(tmp);
        throw_errno("publishing template " + dir, e);
    }
}

}  // namespace vessel::container
