/**
 * URLs as log lines and error messages show them: without the user name and
 * password a URL may carry (`http://user:secret@host/...` → `http://host/...`),
 * since logs are shipped and read where collector credentials must not be.
 */

/**
 * `url` without the userinfo after its scheme's `//`. Works on strings that
 * are no valid URL too (a misspelt scheme, a bad port), which is where the
 * error messages quoting them come from; anything else is returned as is.
 */
export function withoutCredentials(url: string): string {
  return url.replace(/^(\s*[A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#@\s]*@/, '$1');
}
