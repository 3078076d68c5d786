#include "oci/state.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <system_error>
#include <thread>

#include "oci_test_util.h"

namespace vessel::oci {
namespace {

using nlohmann::json;
using test::message_of;
using test::read_file;
using test::TempDir;
using test::write_file;

State sample(const std::string& id) {
    State s;
    s.oci_version = "1.0.2";
    s.id = id;
    s.status = Status::Creating;
    s.bundle = "/b/" + id;
    s.rootfs = "/b/" + id + "/rootfs";
    s.created = "2024-05-01T10:11:12.123456789Z";
    s.owner = "root";
    s.annotations = {{"io.container.manager", "libpod"}};
    s.vessel = {{"vsock", "/run/vessel/" + id + "/vsock.sock"}, {"counter", 0}};
    return s;
}

// A child that exits with `code` or, if it throws, 99; the parent collects the status.
template <typename Fn>
pid_t fork_child(Fn&& fn) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        int code = 0;
        try {
            code = fn();
        } catch (...) {
            code = 99;
        }
        ::_exit(code);
    }
    return pid;
}

int wait_exit(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A live child to stand for a VMM; killed and reaped on destruction.
class Sleeper {
  public:
    Sleeper() {
        pid_ = ::fork();
        if (pid_ == 0) {
            for (;;) ::pause();
        }
    }
    ~Sleeper() { stop(); }
    pid_t pid() const { return pid_; }
    void kill_only() { ::kill(pid_, SIGKILL); }
    void stop() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

  private:
    pid_t pid_ = -1;
};

TEST(OciState, ContainerIds) {
    for (const char* ok : {"a", "web-1", "A_b.c+d", "...x", "4f3b2a1c0d9e8f7a6b5c4d3e2f1a0b9c"})
        EXPECT_NO_THROW(validate_container_id(ok)) << ok;
    EXPECT_NO_THROW(validate_container_id(std::string(255, 'x')));
    struct Bad {
        std::string id;
        std::string why;
    };
    for (const Bad& b : std::vector<Bad>{
             {"", "must not be empty"},
             {".", "must not be \".\" or \"..\""},
             {"..", "must not be \".\" or \"..\""},
             {"a/b", "only letters, digits, '_', '+', '-' and '.' are allowed"},
             {"a,b", "only letters, digits, '_', '+', '-' and '.' are allowed"},
             {"a b", "only letters, digits, '_', '+', '-' and '.' are allowed"},
             {"@new.1", "only letters, digits, '_', '+', '-' and '.' are allowed"},
             {"é", "only letters, digits, '_', '+', '-' and '.' are allowed"},
             {std::string(256, 'x'), "longer than 255 characters"},
         }) {
        EXPECT_EQ(message_of<std::invalid_argument>([&] { validate_container_id(b.id); }),
                  "invalid container id " + json(b.id).dump() + ": " + b.why);
    }
}

TEST(OciState, Status) {
    for (Status s :
         {Status::Creating, Status::Created, Status::Running, Status::Stopped, Status::Paused})
        EXPECT_EQ(parse_status(status_name(s)), s);
    EXPECT_EQ(status_name(Status::Running), "running");
    EXPECT_FALSE(parse_status("Running"));
    EXPECT_FALSE(parse_status(""));
}

TEST(OciState, Rfc3339Nano) {
    EXPECT_EQ(format_rfc3339_nano(0, 0), "1970-01-01T00:00:00Z");
    EXPECT_EQ(format_rfc3339_nano(1700000000, 123456789), "2023-11-14T22:13:20.123456789Z");
    EXPECT_EQ(format_rfc3339_nano(1700000000, 100000000), "2023-11-14T22:13:20.1Z");
    EXPECT_EQ(format_rfc3339_nano(1700000000, 120), "2023-11-14T22:13:20.00000012Z");
    const std::string now = rfc3339_nano_now();
    EXPECT_EQ(now.size() >= 20 && now.back() == 'Z', true) << now;
    EXPECT_EQ(now[4], '-');
    EXPECT_EQ(now[10], 'T');
}

TEST(OciState, DefaultRootAndOwner) {
    if (::geteuid() == 0) {
        EXPECT_EQ(default_state_root(), "/run/vessel");
        EXPECT_EQ(current_owner(), "root");
    } else {
        const char* old = std::getenv("XDG_RUNTIME_DIR");
        const std::string saved = old ? old : "";
        ::setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
        EXPECT_EQ(default_state_root(), "/run/user/4242/vessel");
        if (old)
            ::setenv("XDG_RUNTIME_DIR", saved.c_str(), 1);
        else
            ::unsetenv("XDG_RUNTIME_DIR");
        EXPECT_FALSE(current_owner().empty());
    }
}

TEST(OciState, CreateLoadRoundTrip) {
    TempDir tmp;
    StateStore store(tmp / "root/nested");  // the root is created on first use
    State s = sample("c1");
    s.pid_start_time = 12345;
    s.pid = 777;
    {
        ContainerLock l = store.create(s);
        EXPECT_EQ(l.id(), "c1");
        EXPECT_EQ(l.dir(), tmp / "root/nested/c1");
    }
    struct stat st {};
    ASSERT_EQ(::stat((tmp / "root/nested").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    EXPECT_TRUE(std::filesystem::is_regular_file(tmp / "root/nested/c1/state.json"));
    EXPECT_TRUE(std::filesystem::is_regular_file(tmp / "root/nested/c1/lock"));
    EXPECT_EQ(store.container_dir("c1"), tmp / "root/nested/c1");

    const State l = store.load("c1");
    EXPECT_EQ(l.oci_version, "1.0.2");
    EXPECT_EQ(l.id, "c1");
    EXPECT_EQ(l.status, Status::Creating);
    EXPECT_EQ(l.pid, 777);
    EXPECT_EQ(l.pid_start_time, 12345u);
    EXPECT_EQ(l.bundle, "/b/c1");
    EXPECT_EQ(l.rootfs, "/b/c1/rootfs");
    EXPECT_EQ(l.created, s.created);
    EXPECT_EQ(l.owner, "root");
    EXPECT_EQ(l.annotations, s.annotations);
    EXPECT_EQ(l.vessel, s.vessel);
    // The stored file is readable JSON with vessel's data in its own object.
    const json j = json::parse(read_file(tmp / "root/nested/c1/state.json"));
    EXPECT_EQ(j["status"], "creating");
    EXPECT_EQ(j["vessel"]["vsock"], "/run/vessel/c1/vsock.sock");
}

TEST(OciState, CreateTwiceAndMissing) {
    TempDir tmp;
    StateStore store(tmp.str());
    store.create(sample("dup"));
    EXPECT_EQ(message_of<ContainerExists>([&] { store.create(sample("dup")); }),
              "container dup already exists");
    EXPECT_EQ(message_of<ContainerNotFound>([&] { store.load("ghost"); }),
              "container ghost does not exist");
    EXPECT_EQ(message_of<ContainerNotFound>([&] { store.lock("ghost"); }),
              "container ghost does not exist");
    EXPECT_EQ(message_of<ContainerNotFound>([&] { store.update("ghost", [](State&) {}); }),
              "container ghost does not exist");
    EXPECT_THROW(store.load("../etc"), std::invalid_argument);
    EXPECT_THROW(store.create(sample("a/b")), std::invalid_argument);
    // A failed create leaves nothing behind.
    EXPECT_EQ(store.list_ids(), std::vector<std::string>{"dup"});
    size_t entries = 0;
    for (const auto& e : std::filesystem::directory_iterator(tmp.str())) {
        (void)e;
        ++entries;
    }
    EXPECT_EQ(entries, 1u);
}

TEST(OciState, UpdateListRemove) {
    TempDir tmp;
    StateStore store(tmp.str());
    EXPECT_TRUE(store.list().empty());
    for (const char* id : {"b", "a", "c"}) store.create(sample(id));
    // Leftovers of interrupted operations and stray files are not containers.
    std::filesystem::create_directory(tmp / "@new.1.0");
    std::filesystem::create_directory(tmp / "@rm.1.0");
    write_file(tmp / "stray-file", "x");
    EXPECT_EQ(store.list_ids(), (std::vector<std::string>{"a", "b", "c"}));

    const State u = store.update("b", [](State& s) {
        s.status = Status::Running;
        s.pid = 4242;
        s.vessel["counter"] = 5;
    });
    EXPECT_EQ(u.status, Status::Running);
    EXPECT_EQ(store.load("b").pid, 4242);
    EXPECT_EQ(store.load("b").vessel["counter"], 5);

    EXPECT_THROW(store.update("b", [](State& s) { s.id = "x"; }), std::invalid_argument);

    const auto all = store.list();
    ASSERT_EQ(all.size(), 3u);
    EXPECT_EQ(all[1].id, "b");

    EXPECT_TRUE(store.remove("b"));
    EXPECT_FALSE(store.remove("b"));  // idempotent, for delete --force
    EXPECT_FALSE(std::filesystem::exists(tmp / "b"));
    EXPECT_EQ(store.list_ids(), (std::vector<std::string>{"a", "c"}));
    EXPECT_THROW(store.load("b"), ContainerNotFound);
    // The id can be used again.
    ContainerLock again = store.create(sample("b"));
    // And removed by whoever holds its lock, without waiting for itself.
    store.remove(std::move(again));
    EXPECT_EQ(store.list_ids(), (std::vector<std::string>{"a", "c"}));
}

TEST(OciState, CorruptStateIsReportedNotHidden) {
    TempDir tmp;
    StateStore store(tmp.str());
    store.create(sample("good"));
    store.create(sample("bad"));
    write_file(tmp / "bad/state.json", "{\"id\": \"bad\", \"status\": \"dancing\"}");
    EXPECT_EQ(message_of<std::runtime_error>([&] { store.load("bad"); }),
              "container bad: state " + (tmp / "bad/state.json") +
                  ": status: unknown status \"dancing\"");
    std::vector<std::string> problems;
    const auto states = store.list(&problems);
    ASSERT_EQ(states.size(), 1u);
    EXPECT_EQ(states[0].id, "good");
    ASSERT_EQ(problems.size(), 1u);
    EXPECT_NE(problems[0].find("container bad"), std::string::npos);
    write_file(tmp / "bad/state.json", "{");
    EXPECT_NE(message_of<std::runtime_error>([&] { store.load("bad"); }).find("not valid JSON"),
              std::string::npos);
    // Delete still works on a container whose state cannot be read.
    EXPECT_TRUE(store.remove("bad"));
}

TEST(OciState, StateJsonErrors) {
    EXPECT_EQ(message_of<std::runtime_error>([] { from_state_json("[]", "s"); }),
              "s: must be a JSON object");
    EXPECT_EQ(
        message_of<std::runtime_error>([] { from_state_json(R"({"status":"running"})", "s"); }),
        "s: id: required");
    EXPECT_EQ(message_of<std::runtime_error>(
                  [] { from_state_json(R"({"id":"x","status":"running","pid":-4})", "s"); }),
              "s: pid: must be an integer from 0 to 2147483647");
    EXPECT_EQ(message_of<std::runtime_error>(
                  [] { from_state_json(R"({"id":"x","status":"running","vessel":[]})", "s"); }),
              "s: vessel: must be an object");
    const State s = sample("rt");
    EXPECT_EQ(to_state_json(from_state_json(to_state_json(s), "s")), to_state_json(s));
}

TEST(OciState, LockIsExclusive) {
    TempDir tmp;
    StateStore store(tmp.str());
    ContainerLock held = store.create(sample("x"));  // create hands the lock back
    const pid_t child = fork_child([&] {
        try {
            store.lock("x", false);
            return 1;
        } catch (const std::system_error& e) {
            return e.code().value() == EWOULDBLOCK ? 0 : 2;
        }
    });
    EXPECT_EQ(wait_exit(child), 0);
    // Within one process too: each lock() is its own open file description.
    EXPECT_THROW(store.lock("x", false), std::system_error);
    { ContainerLock gone = std::move(held); }
    EXPECT_NO_THROW(store.lock("x", false));
}

TEST(OciState, WaiterSeesRemoval) {
    TempDir tmp;
    StateStore store(tmp.str());
    store.create(sample("x"));
    std::optional<ContainerLock> held(store.lock("x"));
    int pipefd[2];
    ASSERT_EQ(::pipe(pipefd), 0);
    const pid_t child = fork_child([&] {
        // The forked copy of the held lock's fd shares its flock; closing it leaves the
        // lock with the parent.
        held.reset();
        ::close(pipefd[0]);
        if (::write(pipefd[1], "r", 1) != 1) return 7;  // about to wait for the lock
        try {
            store.update("x", [](State& s) { s.status = Status::Running; });
            return 1;
        } catch (const ContainerNotFound&) {
            return 0;
        }
    });
    ::close(pipefd[1]);
    char c;
    ASSERT_EQ(::read(pipefd[0], &c, 1), 1);
    ::close(pipefd[0]);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    // delete: remove while holding the lock, as the child waits for it.
    store.remove(std::move(*held));
    EXPECT_EQ(wait_exit(child), 0);
    EXPECT_FALSE(std::filesystem::exists(tmp / "x"));  // not resurrected by the update
}

// Several processes update one container as fast as they can while another reads it: every
// read parses, and no update is lost.
TEST(OciState, ConcurrentUpdatesFromManyProcesses) {
    TempDir tmp;
    StateStore store(tmp.str());
    store.create(sample("busy"));
    constexpr int kWriters = 6;
    constexpr int kUpdates = 150;
    std::vector<pid_t> writers;
    for (int w = 0; w < kWriters; ++w) {
        writers.push_back(fork_child([&, w] {
            StateStore mine(tmp.str());
            for (int i = 0; i < kUpdates; ++i) {
                mine.update("busy", [&](State& s) {
                    s.vessel["counter"] = s.vessel["counter"].get<int>() + 1;
                    s.vessel["last"] = w;
                    s.annotations["writer." + std::to_string(w)] = std::to_string(i);
                    s.status = (i % 2) ? Status::Running : Status::Created;
                });
            }
            return 0;
        }));
    }
    const pid_t reader = fork_child([&] {
        StateStore mine(tmp.str());
        int reads = 0;
        for (;;) {
            const State s = mine.load("busy");  // throws (exit 99) on a torn file
            if (s.id != "busy") return 3;
            ++reads;
            if (s.vessel["counter"].get<int>() == kWriters * kUpdates) return reads > 0 ? 0 : 4;
        }
    });
    for (pid_t w : writers) EXPECT_EQ(wait_exit(w), 0);
    EXPECT_EQ(wait_exit(reader), 0);
    const State final_state = store.load("busy");
    EXPECT_EQ(final_state.vessel["counter"], kWriters * kUpdates);
    for (int w = 0; w < kWriters; ++w)
        EXPECT_EQ(final_state.annotations.at("writer." + std::to_string(w)),
                  std::to_string(kUpdates - 1));
    // No temporary files left next to state.json.
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(tmp / "busy"))
        names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"lock", "state.json"}));
}

TEST(OciState, ConcurrentCreatesOfOneIdHaveOneWinner) {
    for (int round = 0; round < 5; ++round) {
        TempDir tmp;
        constexpr int kProcs = 6;
        std::vector<pid_t> procs;
        for (int p = 0; p < kProcs; ++p) {
            procs.push_back(fork_child([&, p] {
                StateStore store(tmp.str());
                State s = sample("same");
                s.vessel["creator"] = p;
                try {
                    store.create(s);
                    return 0;
                } catch (const ContainerExists&) {
                    return 1;
                }
            }));
        }
        int winners = 0, losers = 0;
        for (pid_t p : procs) {
            const int code = wait_exit(p);
            winners += code == 0;
            losers += code == 1;
        }
        EXPECT_EQ(winners, 1);
        EXPECT_EQ(losers, kProcs - 1);
        StateStore store(tmp.str());
        EXPECT_EQ(store.list_ids(), std::vector<std::string>{"same"});
        size_t entries = 0;
        for (const auto& e : std::filesystem::directory_iterator(tmp.str())) {
            (void)e;
            ++entries;
        }
        EXPECT_EQ(entries, 1u);  // no temporary directories left
    }
}

TEST(OciState, RemoveRacesWithUpdates) {
    TempDir tmp;
    StateStore store(tmp.str());
    store.create(sample("r"));
    std::vector<pid_t> writers;
    for (int w = 0; w < 3; ++w) {
        writers.push_back(fork_child([&] {
            StateStore mine(tmp.str());
            for (int i = 0; i < 1000; ++i) {
                try {
                    mine.update("r", [](State& s) {
                        s.vessel["counter"] = s.vessel["counter"].get<int>() + 1;
                    });
                } catch (const ContainerNotFound&) {
                    return 0;  // removed: every later update must fail the same way
                }
            }
            return 5;
        }));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_TRUE(store.remove("r"));
    for (pid_t w : writers) EXPECT_EQ(wait_exit(w), 0);
    EXPECT_FALSE(std::filesystem::exists(tmp / "r"));
    EXPECT_TRUE(store.list_ids().empty());
}

TEST(OciState, ProcStat) {
    const auto self = read_proc_stat(::getpid());
    ASSERT_TRUE(self);
    EXPECT_EQ(self->state, 'R');
    EXPECT_GT(self->start_time, 0u);
    Sleeper child;
    const auto c = read_proc_stat(child.pid());
    ASSERT_TRUE(c);
    EXPECT_GE(c->start_time, self->start_time);
    EXPECT_FALSE(read_proc_stat(0));
    EXPECT_FALSE(read_proc_stat(-1));
}

TEST(OciState, ObservedStatusFollowsTheVmm) {
    Sleeper vmm;
    State s = sample("p");
    s.status = Status::Running;
    s.pid = vmm.pid();
    s.pid_start_time = read_proc_stat(vmm.pid())->start_time;
    EXPECT_EQ(observed_status(s), Status::Running);
    EXPECT_TRUE(process_alive(s.pid, s.pid_start_time));
    EXPECT_TRUE(process_alive(s.pid, 0));

    // The pid now belongs to a process that started at another time: reused, so stopped.
    State reused = s;
    reused.pid_start_time = s.pid_start_time + 1;
    EXPECT_EQ(observed_status(reused), Status::Stopped);

    for (Status st : {Status::Created, Status::Paused, Status::Creating}) {
        State t = s;
        t.status = st;
        EXPECT_EQ(observed_status(t), st);
    }

    vmm.kill_only();  // a zombie until reaped: not running
    for (int i = 0; i < 200 && read_proc_stat(s.pid)->state != 'Z'; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_EQ(read_proc_stat(s.pid)->state, 'Z');
    EXPECT_EQ(observed_status(s), Status::Stopped);
    vmm.stop();  // reaped: gone
    EXPECT_EQ(observed_status(s), Status::Stopped);
    EXPECT_FALSE(process_alive(s.pid, 0));

    State creating = sample("q");  // no VMM yet
    EXPECT_EQ(observed_status(creating), Status::Creating);
    creating.status = Status::Stopped;
    EXPECT_EQ(observed_status(creating), Status::Stopped);
}

TEST(OciState, RuntimeStateJsonIsRuncs) {
    Sleeper vmm;
    State s = sample("web");
    s.status = Status::Running;
    s.pid = vmm.pid();
    s.pid_start_time = read_proc_stat(vmm.pid())->start_time;
    s.annotations = {{"org.opencontainers.image.stopSignal", "15"},
                     {"io.container.manager", "libpod"}};
    const std::string pid = std::to_string(vmm.pid());
    EXPECT_EQ(runtime_state_json(s),
              "{\n"
              "  \"ociVersion\": \"1.0.2\",\n"
              "  \"id\": \"web\",\n"
              "  \"pid\": " +
                  pid +
                  ",\n"
                  "  \"status\": \"running\",\n"
                  "  \"bundle\": \"/b/web\",\n"
                  "  \"rootfs\": \"/b/web/rootfs\",\n"
                  "  \"created\": \"2024-05-01T10:11:12.123456789Z\",\n"
                  "  \"annotations\": {\n"
                  "    \"io.container.manager\": \"libpod\",\n"
                  "    \"org.opencontainers.image.stopSignal\": \"15\"\n"
                  "  },\n"
                  "  \"owner\": \"\"\n"
                  "}");
    EXPECT_EQ(hook_state_json(s),
              "{\"ociVersion\":\"1.0.2\",\"id\":\"web\",\"status\":\"running\",\"pid\":" + pid +
                  ",\"bundle\":\"/b/web\",\"annotations\":{\"io.container.manager\":\"libpod\","
                  "\"org.opencontainers.image.stopSignal\":\"15\"}}");

    vmm.stop();
    s.annotations.clear();
    EXPECT_EQ(runtime_state_json(s),
              "{\n"
              "  \"ociVersion\": \"1.0.2\",\n"
              "  \"id\": \"web\",\n"
              "  \"pid\": 0,\n"
              "  \"status\": \"stopped\",\n"
              "  \"bundle\": \"/b/web\",\n"
              "  \"rootfs\": \"/b/web/rootfs\",\n"
              "  \"created\": \"2024-05-01T10:11:12.123456789Z\",\n"
              "  \"owner\": \"\"\n"
              "}");
    EXPECT_EQ(hook_state_json(s),
              "{\"ociVersion\":\"1.0.2\",\"id\":\"web\",\"status\":\"stopped\",\"bundle\":"
              "\"/b/web\"}");
}

TEST(OciState, GoStringEscaping) {
    State s = sample("e");
    s.status = Status::Stopped;
    s.annotations.clear();
    s.bundle = std::string("<a&b>\"\\\n\t\b\f\x01\x7f", 13) + "\xe2\x80\xa8" + "\xc3\xa9" + "\xff";
    const std::string out = runtime_state_json(s);
    EXPECT_NE(out.find("\"bundle\": \"\\u003ca\\u0026b\\u003e\\\"\\\\\\n\\t\\b\\f\\u0001\x7f"
                       "\\u2028\xc3\xa9\\ufffd\""),
              std::string::npos)
        << out;
    // Whatever the bytes, the output is valid JSON that reads back to the same text
    // (invalid UTF-8 aside).
    s.bundle = "/b/\xc3\xa9t\xc3\xa9";
    EXPECT_EQ(json::parse(runtime_state_json(s))["bundle"], s.bundle);
}

TEST(OciState, ListJsonIsRuncs) {
    EXPECT_EQ(list_json({}), "null\n");
    State a = sample("a");
    a.status = Status::Stopped;
    a.annotations.clear();
    State b = sample("b");
    b.status = Status::Created;
    EXPECT_EQ(list_json({a, b}),
              "[{\"ociVersion\":\"1.0.2\",\"id\":\"a\",\"pid\":0,\"status\":\"stopped\","
              "\"bundle\":\"/b/a\",\"rootfs\":\"/b/a/rootfs\",\"created\":"
              "\"2024-05-01T10:11:12.123456789Z\",\"owner\":\"root\"},"
              "{\"ociVersion\":\"1.0.2\",\"id\":\"b\",\"pid\":0,\"status\":\"created\","
              "\"bundle\":\"/b/b\",\"rootfs\":\"/b/b/rootfs\",\"created\":"
              "\"2024-05-01T10:11:12.123456789Z\",\"annotations\":{\"io.container.manager\":"
              "\"libpod\"},\"owner\":\"root\"}]\n");
}

}  // namespace
}  // namespace vessel::oci
