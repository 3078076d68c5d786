// vessel mkimage: an ext4 disk image from a directory, for `vessel boot --disk`.
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "runtime/disk_image.h"

namespace vessel::cli {

int cmd_mkimage(Args args) {
    std::string dir, image, size = "256M", label = "vessel";
    std::vector<std::string> pos;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string a = args[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= args.size()) usage_error(a + " needs a value");
            return args[++i];
        };
        if (a == "--size")
            size = value();
        else if (a == "--label")
            label = value();
        else if (a == "--help" || a == "-h") {
            std::puts(
                "usage: vessel mkimage [--size SIZE] [--label L] DIR IMAGE\n"
                "Makes a raw ext4 image of SIZE (default 256M; K/M/G suffixes) holding DIR.");
            return 0;
        } else if (!a.empty() && a[0] == '-')
            usage_error("mkimage: unknown option '" + a + "'");
        else
            pos.push_back(a);
    }
    if (pos.size() != 2) usage_error("mkimage: need DIR and IMAGE (see vessel mkimage --help)");
    image::make_ext4_from_dir(pos[0], pos[1], parse_size_mib("--size", size) << 20, label);
    return 0;
}

}  // namespace vessel::cli
