// PidFile: written atomically (temp file + rename), removed only by the
// process it names; writes asked of its thread land in the order asked.

#include "pid_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/process.h"
#include "unit_util.h"

namespace baton::daemon {
namespace {

namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

TEST(PidFile, WriteLeavesExactlyThePidAndNoTempFile) {
  test::TempDir dir;
  PidFile pf(dir.file("batond.pid"));
  EXPECT_TRUE(pf.enabled());
  EXPECT_EQ(pf.path(), dir.file("batond.pid"));
  const int before = unit::open_fd_count();
  auto st = pf.write(1234);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(read_file(dir.file("batond.pid")), "1234\n");
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"batond.pid"});
  EXPECT_EQ(unit::open_fd_count(), before);
}

TEST(PidFile, ReplacingIsAtomic) {
  test::TempDir dir;
  const std::string path = dir.file("batond.pid");
  PidFile pf(path);
  ASSERT_TRUE(pf.write(1111).ok());
  // A reader that opened the old file keeps reading the old, complete content:
  // the new one is a different file renamed over it, not the old one rewritten.
  unit::UniqueFd reader(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(reader.valid());
  struct stat old_st {};
  ASSERT_EQ(::fstat(reader.get(), &old_st), 0);

  ASSERT_TRUE(pf.write(22222).ok());
  EXPECT_EQ(read_file(path), "22222\n");
  char buf[16] = {};
  ASSERT_EQ(::pread(reader.get(), buf, sizeof buf, 0), 5);
  EXPECT_EQ(std::string(buf, 5), "1111\n");
  struct stat new_st {};
  ASSERT_EQ(::stat(path.c_str(), &new_st), 0);
  EXPECT_NE(new_st.st_ino, old_st.st_ino);
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"batond.pid"});
}

TEST(PidFile, WriteIntoAMissingDirectoryFails) {
  test::TempDir dir;
  PidFile pf(dir.file("no/such/dir/batond.pid"));
  auto st = pf.write(1);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("open " + dir.file("no/such/dir/batond.pid.tmp.")), std::string::npos)
      << st.error().message;
  EXPECT_NE(st.error().message.find("No such file or directory"), std::string::npos) << st.error().message;
}

TEST(PidFile, RemoveOnlyWhenItNamesThePid) {
  test::TempDir dir;
  const std::string path = dir.file("batond.pid");
  PidFile pf(path);
  ASSERT_TRUE(pf.write(4242).ok());

  pf.remove_if_names(4243);  // an old generation: the file is its successor's
  EXPECT_TRUE(fs::exists(path));
  EXPECT_EQ(read_file(path), "4242\n");
  pf.remove_if_names(424);  // a prefix is not the pid
  EXPECT_TRUE(fs::exists(path));
  pf.remove_if_names(42420);
  EXPECT_TRUE(fs::exists(path));

  pf.remove_if_names(4242);
  EXPECT_FALSE(fs::exists(path));
  pf.remove_if_names(4242);  // already gone: nothing happens
  EXPECT_FALSE(fs::exists(path));
}

TEST(PidFile, RemoveLeavesAFileThatIsNotAPid) {
  test::TempDir dir;
  const std::string path = dir.file("batond.pid");
  { std::ofstream(path) << "garbage\n"; }
  PidFile(path).remove_if_names(0);
  EXPECT_TRUE(fs::exists(path));
}

TEST(PidFile, WritesAskedSoonLandInOrderBeforeARemovalAndBeforeItGoes) {
  test::TempDir dir;
  const std::string path = dir.file("batond.pid");
  {
    PidFile pf(path);
    ASSERT_TRUE(pf.write(1).ok());  // start-up: now
    pf.write_soon(2);
    pf.write_soon(3);
    // After what was asked before it: the file names 3 by then, so it goes.
    pf.remove_if_names(3);
    EXPECT_FALSE(fs::exists(path));
    pf.write_soon(4);
    pf.settle();
    EXPECT_EQ(read_file(path), "4\n");
    // A write now comes after one asked before it, never under it.
    pf.write_soon(5);
    ASSERT_TRUE(pf.write(6).ok());
    EXPECT_EQ(read_file(path), "6\n");
    pf.write_soon(7);
  }
  EXPECT_EQ(read_file(path), "7\n") << "the last write asked lands before the object goes";
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"batond.pid"});
}

// The old generation's write at COMMIT never replaces its successor's own.
TEST(PidFile, AWriteSoonIfOursReplacesOnlyAFileNamingUs) {
  test::TempDir dir;
  const std::string path = dir.file("batond.pid");
  PidFile pf(path);
  ASSERT_TRUE(pf.write(::getpid()).ok());
  pf.write_soon(111, PidFile::Replace::IfOurs);
  ASSERT_TRUE(pf.settle());
  EXPECT_EQ(read_file(path), "111\n") << "it named us";
  pf.write_soon(222, PidFile::Replace::IfOurs);
  ASSERT_TRUE(pf.settle());
  EXPECT_EQ(read_file(path), "111\n") << "it names another process: left alone";
  fs::remove(path);
  pf.write_soon(333, PidFile::Replace::IfOurs);
  ASSERT_TRUE(pf.settle());
  EXPECT_FALSE(fs::exists(path)) << "removed (a generation that stopped): not written again";
  pf.write_soon(444);
  ASSERT_TRUE(pf.settle());
  EXPECT_EQ(read_file(path), "444\n") << "Always: replaced whatever it names";
}

TEST(PidFile, AWriteSoonThatFailsIsLoggedAndTheNextOneStillLands) {
  test::TempDir dir;
  ASSERT_EQ(::mkdir(dir.file("run").c_str(), 0755), 0);
  PidFile pf(dir.file("run/batond.pid"));
  ASSERT_TRUE(pf.write(1).ok());
  fs::remove_all(dir.file("run"));
  pf.write_soon(2);  // its directory is gone: open fails, on the writer thread
  pf.settle();
  ASSERT_EQ(::mkdir(dir.file("run").c_str(), 0755), 0);
  pf.write_soon(3);
  pf.settle();
  EXPECT_EQ(read_file(dir.file("run/batond.pid")), "3\n");
}

TEST(PidFile, DisabledDoesNothing) {
  test::TempDir dir;
  PidFile pf("");
  EXPECT_FALSE(pf.enabled());
  EXPECT_TRUE(pf.write(1).ok());
  pf.write_soon(2);
  pf.settle();
  pf.remove_if_names(1);
  EXPECT_TRUE(entries(dir.path()).empty());
}

}  // namespace
}  // namespace baton::daemon
