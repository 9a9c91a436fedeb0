//! Empty: this package only pins the allocator source crates that `build.sh` compiles.
