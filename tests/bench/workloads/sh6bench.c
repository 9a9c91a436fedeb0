/* sh6bench: batched allocations freed in varied orders, thread-local. */
#include "sh_common.h"

int main(int argc, char **argv) { return sh_main(argc, argv, "sh6bench", 16000); }
