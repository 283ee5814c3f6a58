/** The st-peter release this client belongs to (equal to package.json's version and the
 * repository's VERSION file; scripts/check-version.sh checks). */
export const VERSION = "0.1.0";
