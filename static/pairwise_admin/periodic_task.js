// What django-celery-beat's periodic task form does in an inline script: show the chosen crontab
// in words under the crontab field, and hide the read-only translation row.
(function () {
  "use strict";
  const data = document.getElementById("readable-crontabs");
  const field = document.querySelector(".field-crontab");
  if (!data || !field) return;
  const readable = JSON.parse(data.textContent);
  const help = field.querySelector(".help");
  const original = help ? help.textContent : "";
  document.querySelectorAll(".field-crontab_translation").forEach((row) => { row.hidden = true; });
  field.addEventListener("change", () => {
    const select = document.getElementById("id_crontab");
    if (!help || !select) return;
    help.textContent = original;
    help.append(document.createElement("br"), "Translation: " + (readable[select.value] || ""));
  });
})();
