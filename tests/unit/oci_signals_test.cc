#include "oci/signals.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <stdexcept>

#include "oci_test_util.h"

namespace vessel::oci {
namespace {

using test::message_of;

TEST(OciSignals, Numbers) {
    EXPECT_EQ(parse_signal("9"), SIGKILL);
    EXPECT_EQ(parse_signal("1"), SIGHUP);
    EXPECT_EQ(parse_signal("15"), SIGTERM);
    EXPECT_EQ(parse_signal("64"), 64);
    EXPECT_EQ(parse_signal("009"), SIGKILL);
}

TEST(OciSignals, NamesInAnyCaseWithOrWithoutSig) {
    EXPECT_EQ(parse_signal("KILL"), SIGKILL);
    EXPECT_EQ(parse_signal("SIGKILL"), SIGKILL);
    EXPECT_EQ(parse_signal("term"), SIGTERM);
    EXPECT_EQ(parse_signal("sigterm"), SIGTERM);
    EXPECT_EQ(parse_signal("SigHup"), SIGHUP);
    EXPECT_EQ(parse_signal("WINCH"), SIGWINCH);
    EXPECT_EQ(parse_signal("USR1"), SIGUSR1);
    EXPECT_EQ(parse_signal("STOP"), SIGSTOP);
    EXPECT_EQ(parse_signal("CONT"), SIGCONT);
    EXPECT_EQ(parse_signal("IOT"), SIGABRT);
    EXPECT_EQ(parse_signal("CLD"), SIGCHLD);
    EXPECT_EQ(parse_signal("POLL"), SIGIO);
    EXPECT_EQ(parse_signal("SYS"), SIGSYS);
}

TEST(OciSignals, RealTime) {
    EXPECT_EQ(parse_signal("RTMIN"), 34);
    EXPECT_EQ(parse_signal("SIGRTMIN"), 34);
    EXPECT_EQ(parse_signal("RTMIN+3"), 37);
    EXPECT_EQ(parse_signal("sigrtmin+30"), 64);
    EXPECT_EQ(parse_signal("RTMAX"), 64);
    EXPECT_EQ(parse_signal("RTMAX-2"), 62);
    EXPECT_EQ(parse_signal("RTMAX-30"), 34);
    EXPECT_EQ(SIGRTMIN, kSigRtMin);  // glibc's numbering, which the guest shares
    EXPECT_EQ(SIGRTMAX, kSigRtMax);
}

TEST(OciSignals, Errors) {
    EXPECT_EQ(message_of<std::invalid_argument>([] { parse_signal("FOO"); }),
              "unknown signal \"FOO\"");
    EXPECT_EQ(message_of<std::invalid_argument>([] { parse_signal("SIG"); }),
              "unknown signal \"SIG\"");
    EXPECT_EQ(message_of<std::invalid_argument>([] { parse_signal(""); }), "empty signal name");
    EXPECT_EQ(message_of<std::invalid_argument>([] { parse_signal("0"); }),
              "signal 0 is out of range (1-64)");
    EXPECT_EQ(message_of<std::invalid_argument>([] { parse_signal("65"); }),
              "signal 65 is out of range (1-64)");
    EXPECT_EQ(message_of<std::invalid_argument>([] { parse_signal("-9"); }),
              "unknown signal \"-9\"");
    EXPECT_EQ(message_of<std::invalid_argument>([] { parse_signal("9999999999"); }),
              "unknown signal \"9999999999\"");
    EXPECT_EQ(message_of<std::invalid_argument>([] { parse_signal(" 9"); }),
              "unknown signal \" 9\"");
    EXPECT_EQ(message_of<std::invalid_argument>([] { parse_signal("RTMIN+31"); }),
              "signal \"RTMIN+31\" is outside RTMIN..RTMAX (34-64)");
    EXPECT_EQ(message_of<std::invalid_argument>([] { parse_signal("RTMIN-1"); }),
              "unknown signal \"RTMIN-1\"");
    EXPECT_EQ(message_of<std::invalid_argument>([] { parse_signal("RTMAX+1"); }),
              "unknown signal \"RTMAX+1\"");
    EXPECT_EQ(message_of<std::invalid_argument>([] { parse_signal("RTMIN+"); }),
              "unknown signal \"RTMIN+\"");
    EXPECT_EQ(message_of<std::invalid_argument>([] { parse_signal("RTMINX"); }),
              "unknown signal \"RTMINX\"");
}

TEST(OciSignals, Names) {
    EXPECT_EQ(signal_name(SIGKILL), "SIGKILL");
    EXPECT_EQ(signal_name(SIGABRT), "SIGABRT");  // the canonical name, not IOT
    EXPECT_EQ(signal_name(SIGCHLD), "SIGCHLD");
    EXPECT_EQ(signal_name(34), "SIGRTMIN");
    EXPECT_EQ(signal_name(37), "SIGRTMIN+3");
    EXPECT_EQ(signal_name(64), "SIGRTMAX");
    EXPECT_EQ(signal_name(32), "signal 32");
    // Every name parses back to its number.
    for (int sig = 1; sig <= 64; ++sig) {
        const std::string name = signal_name(sig);
        if (name.rfind("signal ", 0) == 0) continue;
        EXPECT_EQ(parse_signal(name), sig) << name;
    }
}

}  // namespace
}  // namespace vessel::oci
