#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "runtime/network/ipam.h"
#include "runtime/network/process.h"
#include "runtime/network/store.h"

namespace vessel::network {
namespace {

namespace fs = std::filesystem;

NetworkRecord make_record(const char* subnet) {
    NetworkRecord r;
    r.name = "t";
    r.subnet = Cidr::parse(subnet);
    r.gateway = r.subnet.first_host();
    r.bridge = "vsl-t";
    r.nft_table = "vessel-t";
    return r;
}

const ProcessId kAlive{100, 1}, kDead{200, 2};
bool fake_alive(const ProcessId& p) {
    return p == kAlive;
}

class TempDir {
  public:
    TempDir() {
        char tmpl[] = "/var/tmp/vessel-net-test-XXXXXX";
        path_ = ::mkdtemp(tmpl);
    }
    ~TempDir() { fs::remove_all(path_); }
    const std::string& path() const { return path_; }

  private:
    std::string path_;
};

TEST(NetworkIpam, AllocatesInOrderSkippingGatewayAndNeverTwice) {
    NetworkRecord r = make_record("10.88.0.0/29");  // hosts .1-.6, gateway .1
    std::set<std::string> got;
    for (int i = 0; i < 5; ++i) {
        Lease l = allocate_lease(r, kAlive, std::nullopt, "vm", 7, fake_alive);
        EXPECT_TRUE(got.insert(l.ip.str()).second) << l.ip.str();
        EXPECT_EQ(l.mac, Mac::from_ipv4(l.ip));
        EXPECT_EQ(l.owner, kAlive);
        EXPECT_EQ(l.label, "vm");
    }
    EXPECT_EQ(got, (std::set<std::string>{"10.88.0.2", "10.88.0.3", "10.88.0.4", "10.88.0.5",
                                          "10.88.0.6"}));
    EXPECT_EQ(r.leases.size(), 5u);
}

TEST(NetworkIpam, ExhaustionNamesNetworkAndSubnet) {
    NetworkRecord r = make_record("10.88.0.0/30");  // one guest address
    EXPECT_EQ(allocate_lease(r, kAlive, std::nullopt, "", 0, fake_alive).ip.str(), "10.88.0.2");
    try {
        allocate_lease(r, kAlive, std::nullopt, "", 0, fake_alive);
        FAIL() << "second allocation in a /30 succeeded";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("network t: subnet 10.88.0.0/30 is exhausted"),
                  std::string::npos)
            << e.what();
    }
}

TEST(NetworkIpam, ReclaimsLeasesOfDeadOwners) {
    NetworkRecord r = make_record("10.88.0.0/30");
    allocate_lease(r, kDead, std::nullopt, "", 0, fake_alive);
    EXPECT_EQ(live_lease_count(r, fake_alive), 0u);
    // The only address belongs to a dead owner: allocation takes it over.
    Lease l = allocate_lease(r, kAlive, std::nullopt, "", 0, fake_alive);
    EXPECT_EQ(l.ip.str(), "10.88.0.2");
    ASSERT_EQ(r.leases.size(), 1u);
    EXPECT_EQ(r.leases[0].owner, kAlive);
    EXPECT_EQ(reclaim_dead_leases(r, fake_alive), 0u);
}

TEST(NetworkIpam, ResumesAfterLastAllocatedSoFreedAddressesRest) {
    NetworkRecord r = make_record("10.88.0.0/29");
    Lease a = allocate_lease(r, kAlive, std::nullopt, "", 0, fake_alive);
    allocate_lease(r, kAlive, std::nullopt, "", 0, fake_alive);
    ASSERT_TRUE(release_lease(r, a.ip, kAlive));
    EXPECT_FALSE(release_lease(r, a.ip, kAlive));
    EXPECT_EQ(allocate_lease(r, kAlive, std::nullopt, "", 0, fake_alive).ip.str(), "10.88.0.4");
    EXPECT_EQ(allocate_lease(r, kAlive, std::nullopt, "", 0, fake_alive).ip.str(), "10.88.0.5");
    EXPECT_EQ(allocate_lease(r, kAlive, std::nullopt, "", 0, fake_alive).ip.str(), "10.88.0.6");
    // Wraps around to the freed one.
    EXPECT_EQ(allocate_lease(r, kAlive, std::nullopt, "", 0, fake_alive).ip.str(), "10.88.0.2");
}

TEST(NetworkIpam, RequestedAddress) {
    NetworkRecord r = make_record("10.88.0.0/24");
    EXPECT_EQ(allocate_lease(r, kAlive, Ipv4::parse("10.88.0.77"), "", 0, fake_alive).ip.str(),
              "10.88.0.77");
    EXPECT_THROW(allocate_lease(r, kAlive, Ipv4::parse("10.88.0.77"), "", 0, fake_alive),
                 std::runtime_error);
    for (const char* bad : {"10.88.0.1", "10.88.0.0", "10.88.0.255", "10.88.1.5"})
        EXPECT_THROW(allocate_lease(r, kAlive, Ipv4::parse(bad), "", 0, fake_alive),
                     std::invalid_argument)
            << bad;
    // A release only frees the caller's own lease.
    EXPECT_FALSE(release_lease(r, Ipv4::parse("10.88.0.77"), kDead));
    EXPECT_TRUE(release_lease(r, Ipv4::parse("10.88.0.77"), kAlive));
}

TEST(NetworkProcess, StartTimeDetectsExitAndPidReuse) {
    ProcessId self = self_process();
    EXPECT_EQ(self.pid, ::getpid());
    EXPECT_TRUE(process_alive(self));
    EXPECT_FALSE(process_alive({self.pid, self.start_time + 1}));  // a reused pid
    EXPECT_FALSE(process_alive({0, 0}));

    pid_t child = ::fork();
    if (child == 0) {
        ::pause();
        ::_exit(0);
    }
    auto st = process_start_time(child);
    ASSERT_TRUE(st);
    ProcessId c{child, *st};
    EXPECT_TRUE(process_alive(c));
    ::kill(child, SIGKILL);
    // Dead as soon as it is a zombie, before it is reaped.
    for (int i = 0; i < 200 && process_alive(c); ++i) usleep(5000);
    EXPECT_FALSE(process_alive(c));
    ::waitpid(child, nullptr, 0);
    EXPECT_FALSE(process_alive(c));
}

TEST(NetworkStore, RoundTripsRecordsAndWritesAtomically) {
    TempDir tmp;
    NetworkStore store(tmp.path());
    NetworkRecord r = make_record("10.88.0.0/24");
    r.name = "lab";
    r.dns = {Ipv4::parse("1.1.1.1")};
    allocate_lease(r, kAlive, std::nullopt, "vm-1", 42, fake_alive);
    r.leases[0].tap = "vsl-tap3";
    {
        auto lock = store.lock(true);
        store.save(r);
    }
    auto lock = store.lock(false);
    auto back = store.load("lab");
    ASSERT_TRUE(back);
    EXPECT_EQ(back->subnet, r.subnet);
    EXPECT_EQ(back->gateway, r.gateway);
    EXPECT_EQ(back->dns, r.dns);
    EXPECT_EQ(back->last_allocated, r.last_allocated);
    ASSERT_EQ(back->leases.size(), 1u);
    EXPECT_EQ(back->leases[0].tap, "vsl-tap3");
    EXPECT_EQ(back->leases[0].owner, kAlive);
    EXPECT_EQ(back->leases[0].label, "vm-1");
    EXPECT_EQ(back->leases[0].created, 42);
    EXPECT_FALSE(store.load("other"));

    // No temporary file remains, and a leftover one from a crash is ignored by readers.
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(store.dir())) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{".lock", "lab.json"}));
    std::ofstream(store.dir() + "/lab.json.tmp.999") << "{ half a reco";
    EXPECT_EQ(store.load_all().size(), 1u);

    // A corrupt record is an error naming the file, not an empty network.
    std::ofstream(store.dir() + "/bad.json") << "{ half a reco";
    try {
        store.load_all();
        FAIL() << "corrupt record accepted";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
    }
}

TEST(NetworkStore, RenameReplacesWholeFileOrNothing) {
    TempDir tmp;
    std::string path = tmp.path() + "/f.json";
    write_file_atomic(path, "first\n");
    // A failed write (the target is a directory) leaves the old content and no temp file.
    fs::create_directory(tmp.path() + "/d.json");
    EXPECT_THROW(write_file_atomic(tmp.path() + "/d.json", "x"), std::system_error);
    write_file_atomic(path, std::string(100000, 'y'));
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    EXPECT_EQ(ss.str(), std::string(100000, 'y'));
    size_t n = 0;
    for (auto& e : fs::directory_iterator(tmp.path())) n += e.is_regular_file();
    EXPECT_EQ(n, 1u);
}

TEST(NetworkStore, SharedLockOnMissingStoreReadsEmpty) {
    TempDir tmp;
    NetworkStore store(tmp.path() + "/never-created");
    auto lock = store.lock(false);
    EXPECT_TRUE(store.load_all().empty());
    EXPECT_FALSE(fs::exists(tmp.path() + "/never-created"));
}

TEST(NetworkStore, ValidatesNames) {
    for (const char* ok : {"default", "a", "lab-1.x_y", "0net"})
        EXPECT_NO_THROW(validate_network_name(ok));
    for (const char* bad : {"", "-x", ".x", "_x", "a/b", "a b", "../x", "a:b"})
        EXPECT_THROW(validate_network_name(bad), std::invalid_argument) << bad;
    EXPECT_THROW(validate_network_name(std::string(65, 'a')), std::invalid_argument);
}

// Many processes allocating at once through the lock never get the same address.
TEST(NetworkStore, ConcurrentProcessesNeverShareAnAddress) {
    TempDir tmp;
    NetworkStore store(tmp.path());
    {
        auto lock = store.lock(true);
        NetworkRecord r = make_record("10.77.0.0/24");
        r.name = "race";
        store.save(r);
    }
    constexpr int kProcs = 6, kEach = 20;
    const ProcessId owner = self_process();  // alive for the whole test
    std::vector<pid_t> kids;
    for (int p = 0; p < kProcs; ++p) {
        pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            int rc = 0;
            try {
                for (int i = 0; i < kEach; ++i) {
                    auto lock = store.lock(true);
                    auto r = store.load("race");
                    allocate_lease(*r, owner, std::nullopt, "p" + std::to_string(p), 0);
                    store.save(*r);
                }
            } catch (...) {
                rc = 1;
            }
            ::_exit(rc);
        }
        kids.push_back(pid);
    }
    for (pid_t k : kids) {
        int st = 0;
        ::waitpid(k, &st, 0);
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    auto lock = store.lock(false);
    auto r = store.load("race");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->leases.size(), size_t{kProcs * kEach});
    std::set<uint32_t> ips;
    for (const auto& l : r->leases) ips.insert(l.ip.value);
    EXPECT_EQ(ips.size(), size_t{kProcs * kEach});
}

}  // namespace
}  // namespace vessel::network
