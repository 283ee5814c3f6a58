// The one script of the app, served as /passkeys.js (the pages allow scripts from the app's
// own origin only, none inline). It runs the WebAuthn ceremony of a passkey form:
//
//   <form method="post" action=FINISH data-passkey="create|get" data-begin=BEGIN>
//     (csrf and the form's own fields) <input type=hidden name=ceremony_id>
//     <input type=hidden name=credential> <p data-passkey-error hidden></p> <button>
//   </form>
//
// On submit it posts the form's fields to BEGIN (the app asks st-peter to begin, and answers
// `{ id, options }`: the ceremony id and st-peter's options JSON, or `{ error }`), passes the
// options to navigator.credentials.create or .get, puts the id and the browser's answer
// (`credential.toJSON()`, as JSON) into the hidden fields and submits the form to FINISH as
// an ordinary form post: the app answers that with a page, as it does every other form.
"use strict";

(function () {
  function fromBase64url(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (const byte of bytes) {
      binary += String.fromCharCode(byte);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIds(list) {
    return (list || []).map((c) => Object.assign({}, c, { id: fromBase64url(c.id) }));
  }

  // The browser's own parsers where it has them (Chromium does); else the base64url fields
  // decoded here.
  function creationOptions(json) {
    if (typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function") {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: fromBase64url(json.challenge),
      user: Object.assign({}, json.user, { id: fromBase64url(json.user.id) }),
      excludeCredentials: withIds(json.excludeCredentials),
    });
  }

  function requestOptions(json) {
    if (typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function") {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: fromBase64url(json.challenge),
      allowCredentials: withIds(json.allowCredentials),
    });
  }

  function credentialJson(credential) {
    if (typeof credential.toJSON === "function") {
      return JSON.stringify(credential.toJSON());
    }
    const r = credential.response;
    const response = { clientDataJSON: toBase64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toBase64url(r.attestationObject);
      if (typeof r.getTransports === "function") {
        response.transports = r.getTransports();
      }
    } else {
      response.authenticatorData = toBase64url(r.authenticatorData);
      response.signature = toBase64url(r.signature);
      if (r.userHandle) {
        response.userHandle = toBase64url(r.userHandle);
      }
    }
    return JSON.stringify({
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response,
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
    });
  }

  /** What to tell the user when the browser's ceremony throws. */
  function ceremonyFailure(error, mode) {
    switch (error && error.name) {
      case "NotAllowedError":
        return "The passkey request was cancelled or timed out. Try again.";
      case "InvalidStateError":
        return mode === "create"
          ? "This device already holds a passkey for your account."
          : "This passkey cannot be used here.";
      case "SecurityError":
        return "This site's address does not match the passkey settings of the sign-in service.";
      default:
        return "The passkey could not be used: " + ((error && error.message) || "unknown error") + ".";
    }
  }

  async function begin(form) {
    const fields = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      if (name !== "ceremony_id" && name !== "credential") {
        fields.append(name, value);
      }
    }
    let response;
    try {
      response = await fetch(form.dataset.begin, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
        body: fields.toString(),
        credentials: "same-origin",
      });
    } catch {
      return { error: "The site cannot be reached. Check the connection and try again." };
    }
    try {
      return await response.json();
    } catch {
      return { error: "Something went wrong on our side." };
    }
  }

  function wire(form) {
    const mode = form.dataset.passkey;
    const shown = form.querySelector("[data-passkey-error]");
    const button = form.querySelector("button[type=submit]");

    function fail(text) {
      shown.textContent = text;
      shown.hidden = false;
      button.disabled = false;
      form.removeAttribute("data-busy");
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (form.hasAttribute("data-busy")) {
        return;
      }
      if (!window.PublicKeyCredential || !navigator.credentials) {
        return fail("This browser cannot use passkeys.");
      }
      shown.hidden = true;
      button.disabled = true;
      form.setAttribute("data-busy", "");
      const started = await begin(form);
      if (started.error || !started.id || !started.options) {
        return fail(started.error || "Something went wrong on our side.");
      }
      let credential;
      try {
        credential =
          mode === "create"
            ? await navigator.credentials.create({ publicKey: creationOptions(started.options.publicKey) })
            : await navigator.credentials.get({ publicKey: requestOptions(started.options.publicKey) });
      } catch (error) {
        return fail(ceremonyFailure(error, mode));
      }
      if (!credential) {
        return fail(ceremonyFailure(undefined, mode));
      }
      form.elements.ceremony_id.value = started.id;
      form.elements.credential.value = credentialJson(credential);
      // The finishing post needs no password: it went with the begin request only.
      for (const input of form.querySelectorAll("input[type=password]")) {
        input.disabled = true;
      }
      form.submit();
    });
  }

  for (const form of document.querySelectorAll("form[data-passkey]")) {
    wire(form);
  }
})();
