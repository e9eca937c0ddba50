// resolve_executable: --binary or argv[0], made absolute once at start-up.

#include "baton/handoff/executable_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "support/process.h"
#include "unit_util.h"

namespace baton::handoff {
namespace {

namespace fs = std::filesystem;

void make_file(const std::string& path, mode_t mode) {
  { std::ofstream(path) << "#!/bin/sh\nexit 0\n"; }
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

// Runs the test body in `dir` as the current directory, then goes back.
class InDirectory {
 public:
  explicit InDirectory(const std::string& dir) : old_(fs::current_path()) { fs::current_path(dir); }
  ~InDirectory() { fs::current_path(old_); }

 private:
  fs::path old_;
};

std::string resolved(const std::string& given) {
  auto r = resolve_executable(given);
  EXPECT_TRUE(r.ok()) << given << ": " << (r.ok() ? "" : r.error().message);
  return r.ok() ? r.value() : "<error>";
}

TEST(ResolveExecutable, AbsolutePathStays) {
  EXPECT_EQ(resolved("/usr/local/bin/batond"), "/usr/local/bin/batond");
  // Normalised lexically, even when it does not exist (yet).
  EXPECT_EQ(resolved("/opt/baton/../baton/bin/./batond"), "/opt/baton/bin/batond");
}

TEST(ResolveExecutable, SymlinksAreKept) {
  test::TempDir dir;
  make_file(dir.file("batond-1.2"), 0755);
  ASSERT_EQ(::symlink(dir.file("batond-1.2").c_str(), dir.file("batond").c_str()), 0);
  EXPECT_EQ(resolved(dir.file("batond")), dir.file("batond"));
}

TEST(ResolveExecutable, RelativeIsMadeAbsoluteAgainstTheCurrentDirectory) {
  test::TempDir dir;
  const std::string real_dir = fs::canonical(dir.path()).string();
  InDirectory cd(real_dir);
  EXPECT_EQ(resolved("./batond"), real_dir + "/batond");
  EXPECT_EQ(resolved("build/daemon/batond"), real_dir + "/build/daemon/batond");
  EXPECT_EQ(resolved("../x/batond"), fs::path(real_dir).parent_path().string() + "/x/batond");
}

TEST(ResolveExecutable, BareNameIsFoundInPath) {
  test::TempDir dir;
  fs::create_directory(dir.file("a"));
  fs::create_directory(dir.file("b"));
  make_file(dir.file("a/batond-unit-probe"), 0644);  // not executable: skipped
  make_file(dir.file("b/batond-unit-probe"), 0755);
  unit::ScopedEnv path("PATH", dir.file("nonexistent") + "::" + dir.file("a") + ":" + dir.file("b"));
  EXPECT_EQ(resolved("batond-unit-probe"), dir.file("b/batond-unit-probe"));
}

TEST(ResolveExecutable, FirstMatchInPathWins) {
  test::TempDir dir;
  fs::create_directory(dir.file("a"));
  fs::create_directory(dir.file("b"));
  make_file(dir.file("a/batond-unit-probe"), 0755);
  make_file(dir.file("b/batond-unit-probe"), 0755);
  unit::ScopedEnv path("PATH", dir.file("a") + ":" + dir.file("b"));
  EXPECT_EQ(resolved("batond-unit-probe"), dir.file("a/batond-unit-probe"));
}

TEST(ResolveExecutable, NotFoundInPath) {
  test::TempDir dir;
  unit::ScopedEnv path("PATH", dir.path());
  auto r = resolve_executable("batond-unit-no-such-binary");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "'batond-unit-no-such-binary' not found in PATH");
}

TEST(ResolveExecutable, EmptyIsAnError) {
  auto r = resolve_executable("");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "empty binary path");
}

// BUG (see report): access(X_OK) is true for a directory (always for root), so
// a directory with the binary's name earlier in PATH is "found". Enable once
// the lookup requires a regular file.
TEST(ResolveExecutable, ADirectoryInPathIsNotAnExecutable) {
  test::TempDir dir;
  fs::create_directories(dir.file("a/batond-unit-probe"));
  fs::create_directory(dir.file("b"));
  make_file(dir.file("b/batond-unit-probe"), 0755);
  unit::ScopedEnv path("PATH", dir.file("a") + ":" + dir.file("b"));
  EXPECT_EQ(resolved("batond-unit-probe"), dir.file("b/batond-unit-probe"));
}

}  // namespace
}  // namespace baton::handoff
