#pragma once
// The signals batond acts on are blocked from the first line of main() until
// their libuv handlers are installed: a SIGTERM or SIGUSR2 that arrives while
// a new generation is still starting is delivered then, instead of killing it
// with the default action.

namespace baton::daemon {

// SIGINT, SIGTERM, SIGUSR2, SIGHUP.

void block_handled_signals();
void unblock_handled_signals();

}  // namespace baton::daemon
