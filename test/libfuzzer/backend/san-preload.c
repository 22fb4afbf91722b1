/* Preloaded after clang's ASan runtime into the fuzzing cluster's server (run.sh). Without it the
   server hangs before main on Debian 12, as scripts/sanitize.sh explains for gcc's runtime (clang's
   behaves the same): libgpg-error's constructor calls bindtextdomain, whose first malloc, under
   glibc's gettext lock, is where ASan would initialize, and ASan's initialization re-enters gettext
   through dlerror and releases that lock under its holder. Here bindtextdomain first allocates once,
   with no lock held, so that ASan is initialized before glibc's bindtextdomain runs. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>

char *bindtextdomain(const char *domain, const char *dir) {
    static char *(*next)(const char *, const char *);
    void *volatile early = malloc(16);
    free(early);
    if (!next) next = (char *(*)(const char *, const char *))dlsym(RTLD_NEXT, "bindtextdomain");
    return next(domain, dir);
}
