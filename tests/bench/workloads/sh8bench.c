/* sh8bench: like sh6bench, but every batch is freed by another thread. */
#define CROSS_THREAD
#include "sh_common.h"

int main(int argc, char **argv) { return sh_main(argc, argv, "sh8bench", 9000); }
