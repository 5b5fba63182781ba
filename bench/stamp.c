/* The benchmark task: append "<task> <CLOCK_REALTIME ns>\n" to a file in one write(). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (argc < 3) return 2;
    char line[512];
    int n = snprintf(line, sizeof line, "%s %lld%09ld\n", argv[2], (long long)now.tv_sec,
                     now.tv_nsec);
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0) return 1;
    if (write(fd, line, (size_t)n) != n) return 1;
    return close(fd) != 0;
}
