// io_uring restrictions (virtio/io/uring_engine.h): a ring restricted for one use refuses
// opcodes outside its list, SQEs naming raw fds, and late register operations with -EACCES,
// while its own operations still work. On real rings of this host's kernel.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "virtio/io/engine.h"
#include "virtio/io/uring_engine.h"
#include "vmm/fd.h"

namespace vessel::virtio::io {
namespace {

// A ring restricted like an engine's: created disabled, `fds` registered, restricted, enabled.
class RestrictedRing {
  public:
    RestrictedRing(EngineUse use, std::vector<int> fds) {
        int r = io_uring_queue_init(8, &ring_, IORING_SETUP_R_DISABLED);
        if (r < 0) throw std::system_error(-r, std::generic_category(), "io_uring_queue_init");
        r = io_uring_register_files(&ring_, fds.data(), static_cast<unsigned>(fds.size()));
        if (r < 0) throw std::system_error(-r, std::generic_category(), "register_files");
        r = restrict_ring(&ring_, use);
        if (r < 0) throw std::system_error(-r, std::generic_category(), "restrict_ring");
    }
    ~RestrictedRing() {
        io_uring_unregister_files(&ring_);
        io_uring_queue_exit(&ring_);
    }
    io_uring* get() { return &ring_; }
    io_uring_sqe* sqe() {
        io_uring_sqe* s = io_uring_get_sqe(&ring_);
        if (!s) throw std::runtime_error("SQ ring full");
        return s;
    }
    // Submits what was prepared and returns the first CQE's result.
    int submit_one() {
        int r = io_uring_submit(&ring_);
        if (r < 0) return r;
        io_uring_cqe* cqe = nullptr;
        r = io_uring_wait_cqe(&ring_, &cqe);
        if (r < 0) return r;
        int res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        return res;
    }

  private:
    io_uring ring_{};
};

class UringRestriction : public ::testing::Test {
  protected:
    void SetUp() override {
        UringSupport s = probe_io_uring();
        if (!s.ok) GTEST_SKIP() << s.reason;
        file_ = UniqueFd(::memfd_create("uring-restriction", MFD_CLOEXEC));
        ASSERT_TRUE(file_);
        ASSERT_EQ(::pwrite(file_.get(), "restricted", 10, 0), 10);
    }
    UniqueFd file_;
};

TEST_F(UringRestriction, FileRingDoesItsOwnOpsOnRegisteredFiles) {
    RestrictedRing ring(EngineUse::Files, {file_.get()});
    char buf[10] = {};
    iovec v{buf, sizeof buf};
    io_uring_sqe* s = ring.sqe();
    io_uring_prep_readv(s, 0, &v, 1, 0);
    s->flags |= IOSQE_FIXED_FILE;
    EXPECT_EQ(ring.submit_one(), 10);
    EXPECT_EQ(std::string(buf, 10), "restricted");
    s = ring.sqe();
    io_uring_prep_fsync(s, 0, IORING_FSYNC_DATASYNC);
    s->flags |= IOSQE_FIXED_FILE;
    EXPECT_EQ(ring.submit_one(), 0);
    s = ring.sqe();
    io_uring_prep_fallocate(s, 0, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096);
    s->flags |= IOSQE_FIXED_FILE;
    EXPECT_EQ(ring.submit_one(), 0);
}

TEST_F(UringRestriction, OpcodeOutsideTheListIsRefused) {
    RestrictedRing ring(EngineUse::Files, {file_.get()});
    io_uring_sqe* s = ring.sqe();
    io_uring_prep_openat(s, AT_FDCWD, "/etc/hostname", O_RDONLY, 0);
    s->flags |= IOSQE_FIXED_FILE;
    EXPECT_EQ(ring.submit_one(), -EACCES);
    // A file ring has no polls and no sockets.
    s = ring.sqe();
    io_uring_prep_poll_add(s, 0, POLLIN);
    s->flags |= IOSQE_FIXED_FILE;
    EXPECT_EQ(ring.submit_one(), -EACCES);
    s = ring.sqe();
    io_uring_prep_connect(s, 0, nullptr, 0);
    s->flags |= IOSQE_FIXED_FILE;
    EXPECT_EQ(ring.submit_one(), -EACCES);
}

TEST_F(UringRestriction, RawFileDescriptorIsRefused) {
    RestrictedRing ring(EngineUse::Files, {file_.get()});
    char buf[10];
    iovec v{buf, sizeof buf};
    io_uring_sqe* s = ring.sqe();
    io_uring_prep_readv(s, file_.get(), &v, 1, 0);  // no IOSQE_FIXED_FILE: any fd of ours
    EXPECT_EQ(ring.submit_one(), -EACCES);
}

TEST_F(UringRestriction, LateRegistrationIsRefused) {
    RestrictedRing ring(EngineUse::Files, {file_.get()});
    int other = file_.get();
    EXPECT_EQ(io_uring_register_files_update(ring.get(), 0, &other, 1), -EACCES);
    char buf[64];
    iovec v{buf, sizeof buf};
    EXPECT_EQ(io_uring_register_buffers(ring.get(), &v, 1), -EACCES);
    // The one register operation left is the destructor's.
    EXPECT_EQ(io_uring_unregister_files(ring.get()), 0);
}

TEST_F(UringRestriction, MessageRingPollsButDoesNotTouchFiles) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd a(sv[0]), b(sv[1]);
    RestrictedRing ring(EngineUse::Messages, {a.get()});
    ASSERT_EQ(::send(b.get(), "frame", 5, 0), 5);
    io_uring_sqe* s = ring.sqe();
    io_uring_prep_poll_add(s, 0, POLLIN);
    s->flags |= IOSQE_FIXED_FILE;
    EXPECT_GT(ring.submit_one(), 0);
    char buf[16] = {};
    iovec v{buf, sizeof buf};
    s = ring.sqe();
    io_uring_prep_readv(s, 0, &v, 1, -1);
    s->flags |= IOSQE_FIXED_FILE;
    EXPECT_EQ(ring.submit_one(), 5);
    EXPECT_EQ(std::string(buf), "frame");
    s = ring.sqe();
    io_uring_prep_fsync(s, 0, 0);
    s->flags |= IOSQE_FIXED_FILE;
    EXPECT_EQ(ring.submit_one(), -EACCES);
    s = ring.sqe();
    io_uring_prep_fallocate(s, 0, 0, 0, 4096);
    s->flags |= IOSQE_FIXED_FILE;
    EXPECT_EQ(ring.submit_one(), -EACCES);
}

TEST_F(UringRestriction, LinkFlagOnlyOnMessageRings) {
    RestrictedRing ring(EngineUse::Files, {file_.get()});
    char buf[10];
    iovec v{buf, sizeof buf};
    io_uring_sqe* s = ring.sqe();
    io_uring_prep_readv(s, 0, &v, 1, 0);
    s->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK;
    EXPECT_EQ(ring.submit_one(), -EACCES);
}

// The engines' own rings are restricted: a disk's engine refuses a flush when it was made
// for messages, and the file ops of a disk still complete.
TEST_F(UringRestriction, EnginesAreRestrictedToTheirUse) {
    int fds[] = {file_.get()};
    UringEngine files(8, fds, EngineUse::Files);
    UringEngine messages(8, fds, EngineUse::Messages);
    Op flush;
    flush.kind = OpKind::Flush;
    for (UringEngine* e : {&files, &messages}) e->submit(flush, 1);
    char buf[10] = {};
    iovec v{buf, sizeof buf};
    Op read;
    read.kind = OpKind::Read;
    read.iov = {&v, 1};
    read.len = sizeof buf;
    files.submit(read, 2);
    auto reap = [](UringEngine& e, size_t n) {
        std::vector<Completion> out;
        e.commit();
        while (out.size() < n) {
            if (e.reap(out) > 0) continue;
            pollfd p{e.completion_fd(), POLLIN, 0};
            if (::poll(&p, 1, 5000) <= 0) throw std::runtime_error("timed out");
        }
        return out;
    };
    auto f = reap(files, 2);
    for (const Completion& c : f) EXPECT_EQ(c.result, c.cookie == 2 ? 10 : 0) << c.cookie;
    EXPECT_EQ(std::string(buf, 10), "restricted");
    auto m = reap(messages, 1);
    EXPECT_EQ(m[0].result, -EACCES);
}

}  // namespace
}  // namespace vessel::virtio::io
