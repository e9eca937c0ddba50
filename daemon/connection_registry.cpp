#include "connection_registry.h"

namespace baton::daemon {

void ConnectionRegistry::remove(EchoConnection* c) {
  open_.erase(c);
  if (open_.empty() && on_empty_) on_empty_();
}

}  // namespace baton::daemon
