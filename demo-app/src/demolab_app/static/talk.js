/* /talk: play a step's rehearsal recording (asciicast v2) with the asciinema player. */
(function () {
  "use strict";
  var players = {};
  window.demolabTalk = { players: players, started: [] };

  function toggle(button) {
    var step = button.closest(".step");
    var id = step.getAttribute("data-step");
    var box = document.getElementById("player-" + id);
    if (players[id]) {
      players[id].dispose();
      delete players[id];
      box.textContent = "";
      button.textContent = "\u25B6 Play fallback";
      return;
    }
    players[id] = AsciinemaPlayer.create(button.getAttribute("data-cast"), box, {
      autoPlay: true, fit: "width", idleTimeLimit: 2, terminalFontSize: "16px"
    });
    window.demolabTalk.started.push(id);
    button.textContent = "\u25A0 Close fallback";
    step.scrollIntoView({ block: "start" });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button.fallback") : null;
    if (button) { toggle(button); }
  });
})();
