#pragma once
// tests/storage/tree_util.h: building random directory trees from a seed and
// comparing two trees exactly (kind, mode, mtime, contents, link targets).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/random.h"

namespace shoal::storage::testing {

inline void write_file(const std::string& path, const Bytes& data, mode_t mode = 0644) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  SHOAL_ASSERT(fd >= 0);
  std::size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    SHOAL_ASSERT(n > 0);
    off += static_cast<std::size_t>(n);
  }
  ::fchmod(fd, mode);
  ::close(fd);
}

inline Bytes read_file(const std::string& path) {
  Bytes out;
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return out;
  std::uint8_t buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
  ::close(fd);
  return out;
}

inline Bytes random_bytes(Prng& rng, std::size_t n, bool compressible) {
  Bytes b(n);
  if (!compressible) {
    rng.fill(b);
    return b;
  }
  static const char* words[] = {"alpha ", "beta ", "gamma\n", "delta ", "x = 1;\n", "return y;\n"};
  for (std::size_t i = 0; i < n;) {
    const char* w = words[rng.uniform(6)];
    for (std::size_t j = 0; w[j] != 0 && i < n; ++j) b[i++] = static_cast<std::uint8_t>(w[j]);
  }
  return b;
}

inline void set_mtime(const std::string& path, std::int64_t sec, long nsec, bool nofollow = false) {
  struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
  ::utimensat(AT_FDCWD, path.c_str(), ts, nofollow ? AT_SYMLINK_NOFOLLOW : 0);
}

// A random tree under root: nested dirs, files of many sizes (0 bytes to a
// few MiB, random and compressible), symlinks (relative, dangling), odd modes,
// empty directories, names with a newline and with invalid UTF-8.
inline void make_random_tree(const std::string& root, std::uint64_t seed, int files = 60) {
  Prng rng(seed);
  std::filesystem::create_directories(root);
  std::vector<std::string> dirs{root};
  static const std::size_t sizes[] = {0, 1, 2, 100, 4095, 16383, 16384, 16385, 65536, 100000, 300000, 1 << 20, 3 << 20};
  static const mode_t modes[] = {0644, 0600, 0755, 0444, 0700, 0640};
  for (int i = 0; i < files; ++i) {
    if (rng.chance(0.15)) {
      const std::string d = dirs[rng.uniform(dirs.size())] + "/dir" + std::to_string(i);
      std::filesystem::create_directory(d);
      dirs.push_back(d);
    }
    const std::string dir = dirs[rng.uniform(dirs.size())];
    std::string name = "f" + std::to_string(i);
    if (i == 3) name += "\nnewline";
    if (i == 4) name += "\xff\xfe";
    const std::string path = dir + "/" + name;
    const std::size_t size = sizes[rng.uniform(std::size(sizes))];
    write_file(path, random_bytes(rng, size, rng.chance(0.5)), modes[rng.uniform(std::size(modes))]);
    set_mtime(path, 1600000000 + static_cast<std::int64_t>(rng.uniform(100000000)), static_cast<long>(rng.uniform(1000000000)));
    if (rng.chance(0.1)) {
      const std::string link = dir + "/link" + std::to_string(i);
      SHOAL_ASSERT(::symlink(rng.chance(0.5) ? name.c_str() : "../does/not/exist", link.c_str()) == 0);
      set_mtime(link, 1500000000, 5, true);
    }
  }
  std::filesystem::create_directories(root + "/empty/nested_empty");
  write_file(root + "/empty_file", {});
  ::chmod((root + "/empty").c_str(), 0750);
  // Directory mtimes last: creating children changes them.
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) set_mtime(*it, 1650000000, 123456789);
  set_mtime(root + "/empty/nested_empty", 1650000001, 0);
  set_mtime(root + "/empty", 1650000002, 0);
}

struct Node {
  char kind;  // 'f', 'd', 'l'
  mode_t mode;
  std::int64_t mtime_ns;
  std::string content;  // File bytes or link target.
  bool operator==(const Node&) const = default;
};

// path (relative) -> Node, for everything below root (root itself excluded).
inline std::map<std::string, Node> describe(const std::string& root) {
  std::map<std::string, Node> out;
  std::vector<std::string> stack{""};
  while (!stack.empty()) {
    const std::string rel = stack.back();
    stack.pop_back();
    const std::string abs = rel.empty() ? root : root + "/" + rel;
    DIR* d = ::opendir(abs.c_str());
    if (d == nullptr) continue;
    while (dirent* de = ::readdir(d)) {
      const std::string name = de->d_name;
      if (name == "." || name == "..") continue;
      const std::string r = rel.empty() ? name : rel + "/" + name;
      const std::string a = root + "/" + r;
      struct stat st{};
      ::lstat(a.c_str(), &st);
      Node n{'?', static_cast<mode_t>(st.st_mode & 07777), st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec, {}};
      if (S_ISDIR(st.st_mode)) {
        n.kind = 'd';
        stack.push_back(r);
      } else if (S_ISLNK(st.st_mode)) {
        n.kind = 'l';
        n.mode = 0;  // Link modes are not meaningful on Linux.
        char buf[4096];
        const ssize_t len = ::readlink(a.c_str(), buf, sizeof buf);
        n.content.assign(buf, len > 0 ? static_cast<std::size_t>(len) : 0);
      } else {
        n.kind = 'f';
        const Bytes b = read_file(a);
        n.content.assign(b.begin(), b.end());
      }
      out[r] = std::move(n);
    }
    ::closedir(d);
  }
  return out;
}

}  // namespace shoal::storage::testing
