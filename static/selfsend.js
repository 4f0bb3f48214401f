// "Send it yourself" (templates/public/_send_yourself.html): the copy button, and the
// "I sent it myself" form shown once a link or the button was used. Without this
// script the page still works: the letter is in a read-only box, the form is shown.
// With it, the box shows only when the clipboard refuses, to copy by hand.
// A file of its own, not inline: the Content-Security-Policy runs scripts from 'self'.
(function () {
  "use strict";
  var section = document.getElementById("send-yourself");
  if (!section) return;
  var box = document.getElementById("self-letter");
  var holder = document.getElementById("letter-text");
  var button = document.getElementById("copy-letter");
  var status = document.getElementById("copy-status");
  var form = document.getElementById("self-sent-form");
  var linkUsed = false;

  function say(message) {
    // Emptied first, so that the same message twice is announced twice.
    status.textContent = "";
    window.setTimeout(function () { status.textContent = message; }, 30);
  }

  function selectText() {
    holder.hidden = false;
    box.focus();
    box.select();
    box.setSelectionRange(0, box.value.length);
  }

  function copiedBySelection() {
    selectText();
    var done = false;
    try {
      done = document.execCommand("copy");
    } catch (e) {
      done = false;
    }
    say(done ? section.dataset.copied : section.dataset.copyFailed);
  }

  function copy() {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(box.value).then(
        function () { say(section.dataset.copied); },
        copiedBySelection
      );
    } else {
      copiedBySelection();
    }
  }

  function choose(channel) {
    var radio = form.querySelector('input[name="channel"][value="' + channel + '"]');
    if (radio) radio.checked = true;
    form.hidden = false;
  }

  form.hidden = true;
  holder.hidden = true;
  button.hidden = false;
  button.addEventListener("click", function () {
    copy();
    if (!linkUsed) choose("copy");
  });
  section.querySelectorAll("a[data-channel]").forEach(function (link) {
    link.addEventListener("click", function () {
      // A link without the letter: the click is the gesture that lets us copy it.
      if (link.dataset.full === "false") copy();
      linkUsed = true;
      choose(link.dataset.channel);
    });
  });
})();
