// The console's start: take a token handed over in the URL (and remove it from there),
// ask which kind it is, and show the family's or the operator's view.

import { ApiFailure, forget, remember, roleOf, saved, takeTokenFromUrl } from "./api.js";
import { hideFamily, showFamily } from "./family.js";
import { hideOperator, showOperator } from "./operator.js";

const $ = (id) => document.getElementById(id);

async function signIn(token) {
  const message = $("login-state");
  message.className = "state loading";
  message.textContent = "Checking the token…";
  let role;
  try {
    role = await roleOf(token);
  } catch (e) {
    message.className = "state error";
    message.textContent = e instanceof ApiFailure ? e.describe() : `The service did not answer: ${e}`;
    return;
  }
  if (!role) {
    message.className = "state error";
    message.textContent = "This token is neither an app token nor the platform token (or it has expired).";
    return;
  }
  remember(token, role);
  message.textContent = "";
  await show(role);
}

async function show(role) {
  $("login").hidden = true;
  $("whoami").textContent = role === "family" ? "Family view (app token)" : "Operator view (platform token)";
  $("session").hidden = false;
  document.body.dataset.view = role;
  if (role === "family") await showFamily();
  else await showOperator();
}

function signOut() {
  forget();
  hideFamily();
  hideOperator();
  delete document.body.dataset.view;
  $("session").hidden = true;
  $("login").hidden = false;
  $("token").value = "";
  $("token").focus();
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  if (token) signIn(token);
});
$("logout").addEventListener("click", signOut);

const handed = takeTokenFromUrl();
const kept = saved();
if (handed) signIn(handed);
else if (kept) show(kept.role);
