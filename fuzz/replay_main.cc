// Corpus replay driver: the main() of fuzz targets in the normal (Release, Debug) builds, where libFuzzer is
// not linked. It runs LLVMFuzzerTestOneInput once on every file of the directories and files it is given,
// in sorted order, so ctest replays each seed corpus and every crash ever found on every build.
//
//   fuzz_<target> PATH... [--if-present PATH...]
//
// A PATH before --if-present must exist; one after it is skipped when absent (fuzz/<target>/crashes/ exists
// only once a fuzzer has found something). A failing input aborts inside the target, so the process dies
// with the name of the file it was running printed just before.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;

bool ReadFile(const fs::path& path, std::vector<uint8_t>* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return !in.bad();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<fs::path> files;
  bool optional = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--if-present") {
      optional = true;
      continue;
    }
    std::error_code ec;
    const fs::path path(arg);
    if (fs::is_directory(path, ec)) {
      std::vector<fs::path> entries;
      for (const auto& entry : fs::recursive_directory_iterator(path, ec)) {
        if (entry.is_regular_file()) entries.push_back(entry.path());
      }
      if (ec) {
        std::fprintf(stderr, "cannot list %s: %s\n", arg.c_str(), ec.message().c_str());
        return 2;
      }
      std::sort(entries.begin(), entries.end());
      files.insert(files.end(), entries.begin(), entries.end());
    } else if (fs::is_regular_file(path, ec)) {
      files.push_back(path);
    } else if (!optional) {
      std::fprintf(stderr, "no such file or directory: %s\n", arg.c_str());
      return 2;
    }
  }

  std::vector<uint8_t> data;
  for (const auto& file : files) {
    if (!ReadFile(file, &data)) {
      std::fprintf(stderr, "cannot read %s\n", file.c_str());
      return 2;
    }
    std::fprintf(stderr, "running %s (%zu bytes)\n", file.c_str(), data.size());
    // A copy in a buffer of exactly the input's size, as libFuzzer does, so ASan sees reads past the end.
    // An empty input still gets a valid pointer, as libFuzzer gives it.
    std::vector<uint8_t> exact(data.begin(), data.end());
    uint8_t empty = 0;
    LLVMFuzzerTestOneInput(exact.empty() ? &empty : exact.data(), exact.size());
  }
  std::fprintf(stderr, "replayed %zu inputs\n", files.size());
  return 0;
}
