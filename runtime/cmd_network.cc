// vessel network: create, list, inspect and remove vessel networks (bridge + NAT + addresses).
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "runtime/network/ipam.h"
#include "runtime/network/manage.h"

namespace vessel::cli {

namespace {

namespace net = vessel::network;
using nlohmann::json;

const char kUsage[] =
    "usage: vessel network COMMAND\n"
    "  create --subnet CIDR [--bridge NAME] [--dns IP]... NAME\n"
    "                       bridge with the subnet's first address as gateway, NAT to other\n"
    "                       interfaces, addresses for guests (vessel boot --net network=NAME)\n"
    "  ls [--format table|json]   list networks\n"
    "  inspect NAME               one network and its leases, as JSON\n"
    "  rm NAME...                 remove networks no running VM uses\n"
    "State lives in $VESSEL_STATE_DIR/networks (default /var/lib/vessel/networks).\n";

json status_json(const net::NetworkStatus& s, bool with_leases) {
    const auto& r = s.record;
    json dns = json::array();
    for (const auto& d : r.dns) dns.push_back(d.str());
    json j = {{"name", r.name},
              {"subnet", r.subnet.str()},
              {"bridge", r.bridge},
              {"gateway", r.gateway.str()},
              {"nft_table", "ip " + r.nft_table},
              {"dns", dns},
              {"leases_in_use", s.leases_in_use},
              {"bridge_present", s.bridge_present}};
    if (with_leases) {
        json leases = json::array();
        for (const auto& l : r.leases)
            leases.push_back({{"ip", l.ip.str()},
                              {"mac", l.mac.str()},
                              {"tap", l.tap},
                              {"pid", l.owner.pid},
                              {"alive", net::process_alive(l.owner)},
                              {"label", l.label},
                              {"created", l.created}});
        j["leases"] = leases;
    }
    return j;
}

int network_create(Args args) {
    net::CreateOptions opt;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string a = args[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= args.size()) usage_error("network create: " + a + " needs a value");
            return args[++i];
        };
        if (a == "--subnet")
            opt.subnet = value();
        else if (a == "--bridge")
            opt.bridge = value();
        else if (a == "--dns")
            opt.dns.push_back(value());
        else if (a == "--help" || a == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        } else if (!a.empty() && a[0] == '-')
            usage_error("network create: unknown option '" + a + "'");
        else if (opt.name.empty())
            opt.name = a;
        else
            usage_error("network create: more than one NAME ('" + a + "')");
    }
    if (opt.name.empty()) usage_error("network create: missing NAME");
    if (opt.subnet.empty()) usage_error("network create: --subnet CIDR is required");
    auto r = net::create_network(net::NetworkStore(), opt);
    std::printf("%s\n", r.name.c_str());
    return 0;
}

int network_ls(Args args) {
    std::string format = "table";
    for (size_t i = 0; i < args.size(); ++i) {
        std::string a = args[i];
        if (a == "--format" && i + 1 < args.size())
            format = args[++i];
        else if (a.rfind("--format=", 0) == 0)
            format = a.substr(9);
        else if (a == "--help" || a == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        } else
            usage_error("network ls: unexpected argument '" + a + "'");
    }
    if (format != "table" && format != "json")
        usage_error("network ls: --format must be table or json, not '" + format + "'");
    auto list = net::list_networks(net::NetworkStore());
    if (format == "json") {
        json j = json::array();
        for (const auto& s : list) j.push_back(status_json(s, false));
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    int w = 4;  // the NAME column grows with the longest name
    for (const auto& s : list) w = std::max(w, static_cast<int>(s.record.name.size()));
    std::printf("%-*s  %-18s  %-15s  %-15s  %s\n", w, "NAME", "SUBNET", "BRIDGE", "GATEWAY",
                "LEASES");
    for (const auto& s : list)
        std::printf("%-*s  %-18s  %-15s  %-15s  %zu%s\n", w, s.record.name.c_str(),
                    s.record.subnet.str().c_str(), s.record.bridge.c_str(),
                    s.record.gateway.str().c_str(), s.leases_in_use,
                    s.bridge_present ? "" : "  (bridge missing: recreated on next use)");
    return 0;
}

int network_inspect(Args args) {
    if (args.size() != 1 || args[0][0] == '-') usage_error("network inspect: need one NAME");
    auto s = net::inspect_network(net::NetworkStore(), args[0]);
    std::printf("%s\n", status_json(s, true).dump(2).c_str());
    return 0;
}

int network_rm(Args args) {
    if (args.empty()) usage_error("network rm: need NAME");
    for (char* a : args)
        if (a[0] == '-') usage_error(std::string("network rm: unknown option '") + a + "'");
    // Each name on its own: one refusal does not stop the others; any failure exits 1.
    int rc = 0;
    for (char* a : args) {
        try {
            net::remove_network(net::NetworkStore(), a);
            std::printf("%s\n", a);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "vessel: %s\n", e.what());
            rc = 1;
        }
    }
    return rc;
}

}  // namespace

int cmd_network(Args args) {
    if (args.empty()) {
        std::fputs(kUsage, stderr);
        return 2;
    }
    std::string sub = args[0];
    Args rest = args.subspan(1);
    if (sub == "create") return network_create(rest);
    if (sub == "ls" || sub == "list") return network_ls(rest);
    if (sub == "inspect") return network_inspect(rest);
    if (sub == "rm" || sub == "remove") return network_rm(rest);
    if (sub == "--help" || sub == "-h" || sub == "help") {
        std::fputs(kUsage, stdout);
        return 0;
    }
    usage_error("network: unknown command '" + sub + "' (create, ls, inspect, rm)");
}

}  // namespace vessel::cli
