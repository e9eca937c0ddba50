// LD_PRELOAD shim for the upgrade tests: posix_spawn first sleeps for
// BATON_TEST_SPAWN_DELAY_MS, as an exec that hangs (a binary on a dead
// network mount) would hold the thread that spawns.
#include <dlfcn.h>
#include <spawn.h>
#include <unistd.h>

#include <cstdlib>

extern "C" int posix_spawn(pid_t* pid, const char* path, const posix_spawn_file_actions_t* actions,
                           const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
  using Real = int (*)(pid_t*, const char*, const posix_spawn_file_actions_t*, const posix_spawnattr_t*, char* const[],
                       char* const[]);
  static const Real real = reinterpret_cast<Real>(::dlsym(RTLD_NEXT, "posix_spawn"));
  if (const char* ms = std::getenv("BATON_TEST_SPAWN_DELAY_MS")) ::usleep(static_cast<useconds_t>(std::atoi(ms)) * 1000);
  return real(pid, path, actions, attr, argv, envp);
}
